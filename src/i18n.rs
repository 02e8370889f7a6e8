//! Login-page strings (spec §3.4) in code-server's languages. English is built in; the other
//! languages code-server ships for its login page (`ja`, `th`, `ur`, `zh-cn`) are read from the
//! code-server package whose VS Code build we run (`out/node/i18n/locales/*.json`), so the page
//! says exactly what code-server's says. `--locale` picks the language; without it, the
//! browser's `Accept-Language` does. `--i18n FILE` overrides keys in every language.
//! `{{app}}` is replaced by the app name; pages escape the result, so neither custom strings
//! nor the app name can inject markup.

use std::collections::HashMap;
use std::path::Path;

/// Every key the pages use, with its English text.
const ENGLISH: &[(&str, &str)] = &[
    ("LOGIN_TITLE", "{{app}} login"),
    ("LOGIN_BELOW", "Please log in below."),
    ("WELCOME", "Welcome to {{app}}"),
    ("LOGIN_PASSWORD", "Check the config file for the password."),
    ("LOGIN_USING_ENV_PASSWORD", "Password was set from $PASSWORD."),
    ("LOGIN_USING_HASHED_PASSWORD", "Password was set from $HASHED_PASSWORD."),
    ("SUBMIT", "SUBMIT"),
    ("PASSWORD_PLACEHOLDER", "PASSWORD"),
    ("LOGIN_RATE_LIMIT", "Login rate limited!"),
    ("MISS_PASSWORD", "Missing password"),
    ("INCORRECT_PASSWORD", "Incorrect password"),
    ("LOGOUT_QUESTION", "Sign out of {{app}}?"),
    ("LOGOUT_EXPLANATION", "Another site sent you here. Sign out only if you meant to."),
    ("LOGOUT_BUTTON", "SIGN OUT"),
    // Multi-user mode's login (not code-server's: translated below).
    ("LOGIN_ACCOUNT", "Sign in with your username and password."),
    ("USERNAME_PLACEHOLDER", "USERNAME"),
    ("MISS_USERNAME", "Missing username"),
    ("INCORRECT_CREDENTIALS", "Incorrect username or password"),
    ("ACCOUNT_DISABLED", "This account is disabled"),
];

/// Our own translations of the keys code-server's packages do not have (multi-user mode's),
/// beneath the package's table and the operator's `--i18n`. Used only for a language the
/// package offers, so a page is never half translated.
const OWN_TRANSLATIONS: &[(&str, &[(&str, &str)])] = &[
    (
        "ja",
        &[
            ("LOGIN_ACCOUNT", "ユーザー名とパスワードでログインしてください。"),
            ("USERNAME_PLACEHOLDER", "ユーザー名"),
            ("MISS_USERNAME", "ユーザー名がありません"),
            ("INCORRECT_CREDENTIALS", "ユーザー名またはパスワードが正しくありません"),
            ("ACCOUNT_DISABLED", "このアカウントは無効になっています"),
        ],
    ),
    (
        "th",
        &[
            ("LOGIN_ACCOUNT", "เข้าสู่ระบบด้วยชื่อผู้ใช้และรหัสผ่านของคุณ"),
            ("USERNAME_PLACEHOLDER", "ชื่อผู้ใช้"),
            ("MISS_USERNAME", "ไม่มีชื่อผู้ใช้"),
            ("INCORRECT_CREDENTIALS", "ชื่อผู้ใช้หรือรหัสผ่านไม่ถูกต้อง"),
            ("ACCOUNT_DISABLED", "บัญชีนี้ถูกปิดใช้งาน"),
        ],
    ),
    (
        "ur",
        &[
            ("LOGIN_ACCOUNT", "اپنے صارف نام اور پاس ورڈ سے لاگ ان کریں۔"),
            ("USERNAME_PLACEHOLDER", "صارف نام"),
            ("MISS_USERNAME", "صارف نام موجود نہیں ہے"),
            ("INCORRECT_CREDENTIALS", "غلط صارف نام یا پاس ورڈ"),
            ("ACCOUNT_DISABLED", "یہ اکاؤنٹ غیر فعال ہے"),
        ],
    ),
    (
        "zh-cn",
        &[
            ("LOGIN_ACCOUNT", "请使用您的用户名和密码登录。"),
            ("USERNAME_PLACEHOLDER", "用户名"),
            ("MISS_USERNAME", "缺少用户名"),
            ("INCORRECT_CREDENTIALS", "用户名或密码错误"),
            ("ACCOUNT_DISABLED", "此账户已被禁用"),
        ],
    ),
];

fn own_translation(lang: &str, key: &str) -> Option<&'static str> {
    let (_, table) = OWN_TRANSLATIONS.iter().find(|(l, _)| *l == lang)?;
    table.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// A custom strings file that cannot be used, in code-server's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct I18nError(String);

/// The languages code-server's login page knows.
pub const LANGUAGES: [&str; 5] = ["en", "ja", "th", "ur", "zh-cn"];

type Table = HashMap<String, String>;

/// The strings of one run: per language, code-server's translations and the operator's
/// overrides over English.
#[derive(Debug, Clone)]
pub struct Strings {
    english: Table,
    /// Translations by language (lower case), missing keys falling back to English.
    others: HashMap<String, Table>,
    /// `--i18n`: wins over every language.
    custom: Table,
    app_name: String,
    /// `--locale`, resolved to one of our languages; `None`: the browser chooses.
    fixed: Option<String>,
    /// `--locale` as given (also VS Code's), for pages with no request to ask.
    pub lang: String,
}

/// The strings of one language.
pub struct Lang<'a> {
    strings: &'a Strings,
    table: Option<&'a Table>,
    /// The language's code, for `<html lang>`.
    pub code: &'a str,
}

impl Lang<'_> {
    pub fn get(&self, key: &str) -> String {
        let s = self.strings;
        let text = s
            .custom
            .get(key)
            .or_else(|| self.table.and_then(|t| t.get(key)))
            .map(String::as_str)
            .or_else(|| self.table.and_then(|_| own_translation(self.code, key)))
            .or_else(|| s.english.get(key).map(String::as_str));
        text.map(|t| t.replace("{{app}}", &s.app_name)).unwrap_or_else(|| key.to_string())
    }
}

impl Strings {
    /// English, plus the translations in `locales` (a code-server package's
    /// `out/node/i18n/locales`) when given and present; unreadable ones are skipped with a
    /// warning, as the page still works in English.
    pub fn new(app_name: &str, locale: Option<&str>, locales: Option<&Path>) -> Strings {
        let mut others = HashMap::new();
        for lang in LANGUAGES.iter().filter(|l| **l != "en") {
            let Some(dir) = locales else { break };
            let file = dir.join(format!("{lang}.json"));
            let table = match std::fs::read(&file) {
                Ok(bytes) => parse_table(&bytes),
                Err(e) => {
                    tracing::warn!(
                        "Login page strings for {lang} unavailable ({}): {}",
                        file.display(),
                        crate::errno::describe(&e)
                    );
                    continue;
                }
            };
            match table {
                Ok(table) => {
                    others.insert(lang.to_string(), table);
                }
                Err(e) => tracing::warn!("Login page strings for {lang} unavailable ({}): {e}", file.display()),
            }
        }
        let mut strings = Strings {
            english: ENGLISH.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            others,
            custom: Table::new(),
            app_name: app_name.to_string(),
            fixed: None,
            lang: locale.filter(|l| !l.is_empty()).unwrap_or("en").to_string(),
        };
        strings.fixed = locale.filter(|l| !l.is_empty()).map(|l| strings.resolve(l).unwrap_or("en").to_string());
        strings
    }

    /// One of our languages for a language tag (`ja-JP` → `ja`, `zh` → `zh-cn`), if any.
    fn resolve(&self, tag: &str) -> Option<&'static str> {
        let tag = tag.trim().to_ascii_lowercase();
        let known = |l: &str| LANGUAGES.iter().copied().find(|k| *k == l && (l == "en" || self.others.contains_key(l)));
        known(&tag).or_else(|| {
            let primary = tag.split(['-', '_']).next().unwrap_or_default();
            known(primary).or_else(|| (primary == "zh").then(|| known("zh-cn")).flatten())
        })
    }

    /// The language for a request: `--locale` when given, else the best of the browser's
    /// `Accept-Language` we have, else English.
    pub fn for_request(&self, accept_language: Option<&str>) -> Lang<'_> {
        let code = self.fixed.as_deref().unwrap_or_else(|| {
            let mut tags: Vec<(f32, &str)> = accept_language
                .unwrap_or_default()
                .split(',')
                .filter_map(|part| {
                    let mut pieces = part.split(';');
                    let tag = pieces.next()?.trim();
                    let q = pieces
                        .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
                        .unwrap_or(1.0);
                    (!tag.is_empty() && tag != "*" && q > 0.0).then_some((q, tag))
                })
                .collect();
            // Stable: equal weights keep the browser's order.
            tags.sort_by(|a, b| b.0.total_cmp(&a.0));
            tags.iter().find_map(|(_, t)| self.resolve(t)).unwrap_or("en")
        });
        Lang { strings: self, table: self.others.get(code), code }
    }

    /// English (or `--locale`), for pages without a request to ask.
    pub fn get(&self, key: &str) -> String {
        self.for_request(None).get(key)
    }

    /// Merges a custom strings file over the built-in table, with code-server's error messages.
    pub fn load_custom(&mut self, path: &Path) -> Result<(), I18nError> {
        let p = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                I18nError(format!("Custom strings file not found: {p}\nPlease ensure the file exists and is readable."))
            }
            _ => I18nError(format!("Failed to load custom strings from {p}: {}", crate::errno::describe(&e))),
        })?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| I18nError(format!("Invalid JSON in custom strings file: {p}\n{e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(I18nError(format!(
                "Failed to load custom strings from {p}: expected a JSON object of strings"
            )));
        };
        for (k, v) in map {
            let serde_json::Value::String(s) = v else {
                return Err(I18nError(format!(
                    "Failed to load custom strings from {p}: the value of {k} is not a string"
                )));
            };
            self.custom.insert(k, s);
        }
        Ok(())
    }

    pub fn app_name(&self) -> &str {
        &self.app_name
    }
}

/// A locale file: a JSON object of strings.
fn parse_table(bytes: &[u8]) -> Result<Table, serde_json::Error> {
    serde_json::from_slice::<Table>(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_japanese() -> (tempfile::TempDir, Strings) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ja.json"), r#"{"WELCOME": "ようこそ {{app}} へ！", "SUBMIT": "実行"}"#)
            .unwrap();
        std::fs::write(dir.path().join("zh-cn.json"), r#"{"WELCOME": "欢迎来到 {{app}}"}"#).unwrap();
        let s = Strings::new("IDE", None, Some(dir.path()));
        (dir, s)
    }

    #[test]
    fn the_browser_chooses_unless_a_locale_is_set() {
        let (dir, s) = with_japanese();
        assert_eq!(s.for_request(Some("ja-JP,ja;q=0.9,en;q=0.8")).get("WELCOME"), "ようこそ IDE へ！");
        assert_eq!(s.for_request(Some("ja-JP")).code, "ja");
        // Keys a translation lacks come from English.
        assert_eq!(s.for_request(Some("ja")).get("LOGIN_TITLE"), "IDE login");
        assert_eq!(s.for_request(Some("zh-CN")).get("WELCOME"), "欢迎来到 IDE");
        assert_eq!(s.for_request(Some("zh-TW, de")).code, "zh-cn");
        assert_eq!(s.for_request(Some("de-DE, fr;q=0.5")).code, "en", "nothing we have");
        assert_eq!(s.for_request(Some("de, ja;q=0.1, th;q=0")).code, "ja", "weights order, q=0 excluded");
        assert_eq!(s.for_request(None).code, "en");
        assert_eq!(s.for_request(Some("th")).code, "en", "not shipped in this build");
        let fixed = Strings::new("IDE", Some("ja"), Some(dir.path()));
        assert_eq!(fixed.for_request(Some("zh-CN")).get("SUBMIT"), "実行", "--locale wins");
        let unknown = Strings::new("IDE", Some("fr"), Some(dir.path()));
        assert_eq!(unknown.for_request(Some("ja")).code, "en", "an unknown --locale is English, as code-server");
    }

    #[test]
    fn defaults_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Strings::new("My <IDE>", None, None);
        assert_eq!(s.get("WELCOME"), "Welcome to My <IDE>");
        assert_eq!(s.get("LOGIN_TITLE"), "My <IDE> login");
        let f = dir.path().join("strings.json");
        std::fs::write(&f, r#"{"WELCOME": "Hello from {{app}}", "NEW_KEY": "x"}"#).unwrap();
        s.load_custom(&f).unwrap();
        assert_eq!(s.get("WELCOME"), "Hello from My <IDE>");
        assert_eq!(s.get("SUBMIT"), "SUBMIT");
    }

    #[test]
    fn code_server_error_messages() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Strings::new("x", None, None);
        let missing = dir.path().join("missing.json");
        assert_eq!(
            s.load_custom(&missing).unwrap_err().to_string(),
            format!(
                "Custom strings file not found: {}\nPlease ensure the file exists and is readable.",
                missing.display()
            )
        );
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{nope").unwrap();
        assert!(
            s.load_custom(&bad)
                .unwrap_err()
                .to_string()
                .starts_with(&format!("Invalid JSON in custom strings file: {}\n", bad.display()))
        );
        let list = dir.path().join("list.json");
        std::fs::write(&list, "[1]").unwrap();
        assert!(
            s.load_custom(&list)
                .unwrap_err()
                .to_string()
                .starts_with(&format!("Failed to load custom strings from {}: ", list.display()))
        );
    }
}

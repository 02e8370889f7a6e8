//! Login-page strings (spec §3.4): built-in English, overridden for every language by
//! `--i18n FILE`. `{{app}}` is replaced by the app name; pages escape the result, so neither
//! custom strings nor the app name can inject markup.

use std::collections::HashMap;
use std::path::Path;

use crate::cli::CliError;

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
];

/// The strings of one run: English plus the operator's overrides.
#[derive(Debug, Clone)]
pub struct Strings {
    table: HashMap<String, String>,
    app_name: String,
    /// The `lang` of the pages: the `--locale` given, or `en`.
    pub lang: String,
}

impl Strings {
    /// Built-in strings only. Languages other than English fall back to English; `--i18n`
    /// is how an operator translates the login page.
    pub fn new(app_name: &str, locale: Option<&str>) -> Strings {
        Strings {
            table: ENGLISH.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            app_name: app_name.to_string(),
            lang: locale.filter(|l| !l.is_empty()).unwrap_or("en").to_string(),
        }
    }

    /// Merges a custom strings file over the built-in table, with code-server's error messages.
    pub fn load_custom(&mut self, path: &Path) -> Result<(), CliError> {
        let p = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CliError::new(format!(
                "Custom strings file not found: {p}\nPlease ensure the file exists and is readable."
            )),
            _ => CliError::new(format!("Failed to load custom strings from {p}: {}", crate::errno::describe(&e))),
        })?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| CliError::new(format!("Invalid JSON in custom strings file: {p}\n{e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(CliError::new(format!(
                "Failed to load custom strings from {p}: expected a JSON object of strings"
            )));
        };
        for (k, v) in map {
            let serde_json::Value::String(s) = v else {
                return Err(CliError::new(format!(
                    "Failed to load custom strings from {p}: the value of {k} is not a string"
                )));
            };
            self.table.insert(k, s);
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> String {
        self.table.get(key).map(|s| s.replace("{{app}}", &self.app_name)).unwrap_or_else(|| key.to_string())
    }

    pub fn app_name(&self) -> &str {
        &self.app_name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Strings::new("My <IDE>", None);
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
        let mut s = Strings::new("x", None);
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

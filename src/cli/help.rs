//! `--help` and `--version` output in code-server's formats (spec §2.3).

use super::options::{Kind, OPTIONS};

use crate::version::{VERSION, commit};

/// `<version> <commit> with Code <vscode version>`, or the one-line JSON form.
pub fn version_text(json: bool, vscode_version: Option<&str>) -> String {
    let vscode = vscode_version.unwrap_or("development");
    if json {
        serde_json::json!({
            "codeServer": VERSION,
            "commit": commit(),
            "vscode": vscode,
        })
        .to_string()
    } else {
        format!("{VERSION} {} with Code {vscode}", commit())
    }
}

pub fn help_text() -> String {
    let described: Vec<_> = OPTIONS.iter().filter(|o| o.description.is_some()).collect();
    let long_w = described.iter().map(|o| o.name.len()).max().unwrap_or(0);
    let short_w = described.iter().filter_map(|o| o.short.map(str::len)).max().unwrap_or(0);

    let mut out = format!(
        "code-server {VERSION} {}\n\nUsage: code-server [options] [path]\n    \
         - Opening a directory: code-server ./path/to/your/project\n    \
         - Opening a saved workspace: code-server ./path/to/your/project.code-workspace\n\nOptions\n",
        commit()
    );
    for o in described {
        let short = match o.short {
            Some(s) => format!("{}-{s}", " ".repeat(short_w - s.len())),
            None => " ".repeat(short_w + 1),
        };
        let mut lines = o.description.unwrap_or_default().lines();
        let first = lines.next().unwrap_or_default();
        let deprecated = if o.deprecated { "(deprecated) " } else { "" };
        out.push_str(&format!("  {short} --{}{} {deprecated}{first}", o.name, " ".repeat(long_w - o.name.len())));
        for more in lines {
            out.push('\n');
            out.push_str(&" ".repeat(long_w + short_w + 7));
            out.push_str(more);
        }
        if let Kind::Enum(values) = o.kind {
            out.push_str(&format!(" [{}]", values.join(", ")));
        }
        out.push('\n');
    }
    out
}

/// The completion script for `shell` (one of [`super::options::SHELLS`]), generated from the
/// command line's clap definition.
pub fn completions(shell: &str) -> Option<Vec<u8>> {
    use clap_complete::Shell;
    let shell = match shell {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        "elvish" => Shell::Elvish,
        "powershell" => Shell::PowerShell,
        _ => return None,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut super::parse::command(), "code-server", &mut out);
    Some(out)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn help_lists_every_described_option() {
        let help = help_text();
        assert!(help.contains("\nUsage: code-server [options] [path]\n"));
        for o in OPTIONS {
            let listed = help.contains(&format!(" --{} ", o.name));
            assert_eq!(listed, o.description.is_some(), "{}", o.name);
        }
        assert!(help.contains("-vvv --verbose"));
        assert!(help.contains(" -an --app-name"));
        assert!(help.contains("(deprecated) Text to show on login page"));
        assert!(help.contains("The type of authentication to use. [password, none]"));
    }

    #[test]
    fn version_formats() {
        assert_eq!(version_text(false, None), format!("{VERSION} {} with Code development", commit()));
        let v: serde_json::Value = serde_json::from_str(&version_text(true, Some("1.2.3"))).unwrap();
        assert_eq!(v["codeServer"], VERSION);
        assert_eq!(v["vscode"], "1.2.3");
    }
}

//! Per-call env vars: code that sets them in a kernel before a run and puts
//! back the sandbox-wide values after it, in the kernel's own language
//! (a kernel's environment can only be changed from inside).

use std::collections::BTreeMap;

/// POSIX names only: anything else could not be exported by a shell and
/// would let a name smuggle code into the snippets below.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Code that sets `vars`, or None when the language has no way here.
pub fn set_code(language: &str, vars: &BTreeMap<String, String>) -> Option<String> {
    if vars.is_empty() {
        return None;
    }
    match language {
        // A JSON object of strings is a valid Python dict literal.
        "python" => Some(format!(
            "__import__('os').environ.update({})",
            serde_json::to_string(vars).expect("strings serialize")
        )),
        "bash" => Some(
            vars.iter()
                .map(|(k, v)| format!("export {k}={}", shell_quote(v)))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

/// Code that gives each of `keys` back its sandbox-wide value (from
/// `globals`), or unsets it when it had none.
pub fn restore_code<'a>(
    language: &str,
    keys: impl IntoIterator<Item = &'a String>,
    globals: &BTreeMap<String, String>,
) -> Option<String> {
    let (mut reset, mut unset) = (BTreeMap::new(), Vec::new());
    for k in keys {
        match globals.get(k) {
            Some(v) => {
                reset.insert(k.clone(), v.clone());
            }
            None => unset.push(k.clone()),
        }
    }
    if reset.is_empty() && unset.is_empty() {
        return None;
    }
    match language {
        "python" => {
            let mut code = String::new();
            if !reset.is_empty() {
                code += &set_code(language, &reset).expect("python sets");
                code.push('\n');
            }
            if !unset.is_empty() {
                code += &format!(
                    "for __sandbar_k in {}: __import__('os').environ.pop(__sandbar_k, None)\ndel __sandbar_k",
                    serde_json::to_string(&unset).expect("strings serialize")
                );
            }
            Some(code)
        }
        "bash" => {
            let mut lines: Vec<String> = reset
                .iter()
                .map(|(k, v)| format!("export {k}={}", shell_quote(v)))
                .collect();
            if !unset.is_empty() {
                lines.push(format!("unset {}", unset.join(" ")));
            }
            Some(lines.join("\n"))
        }
        _ => None,
    }
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names_must_be_posix() {
        assert!(valid_name("FOO_1"));
        assert!(valid_name("_x"));
        assert!(!valid_name("1X"));
        assert!(!valid_name(""));
        assert!(!valid_name("A;rm"));
        assert!(!valid_name("A B"));
    }

    #[test]
    fn python_sets_and_restores_through_os_environ() {
        let set = set_code("python", &vars(&[("A", "it's \"x\"\n")])).unwrap();
        assert_eq!(
            set,
            r#"__import__('os').environ.update({"A":"it's \"x\"\n"})"#
        );
        let globals = vars(&[("A", "global")]);
        let keys = ["A".to_string(), "B".to_string()];
        let restore = restore_code("python", &keys, &globals).unwrap();
        assert!(restore.contains(r#"update({"A":"global"})"#));
        assert!(restore.contains(r#"for __sandbar_k in ["B"]"#));
    }

    #[test]
    fn bash_quotes_values() {
        let set = set_code("bash", &vars(&[("A", "it's $HOME")])).unwrap();
        assert_eq!(set, r"export A='it'\''s $HOME'");
        let restore = restore_code("bash", &["A".to_string()], &BTreeMap::new()).unwrap();
        assert_eq!(restore, "unset A");
    }

    #[test]
    fn other_languages_have_no_snippets() {
        assert!(set_code("r", &vars(&[("A", "1")])).is_none());
        assert!(set_code("python", &BTreeMap::new()).is_none());
    }
}

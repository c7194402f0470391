//! Domain-name rules of an egress policy: `example.com` (that name only) and
//! `*.example.com` (every name under it, not the apex), checked as written
//! and matched case-insensitively against the names sandboxes ask for and
//! send (DNS questions, TLS SNI, HTTP Host).

use std::collections::HashSet;

/// Longest name DNS can carry, in its dotted text form.
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// One rule as written in `allowOut`/`denyOut`, normalized.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum NameRule {
    Exact(String),
    /// The suffix, without the `*.`.
    Under(String),
}

/// Why an entry is not a name rule; the message is shown to API clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadName(pub(crate) String);

/// Parses `entry` as a name rule. Errors say what is wrong, in terms of the
/// entry the client wrote.
pub(crate) fn parse(entry: &str) -> Result<NameRule, BadName> {
    let lowered = entry.trim().to_ascii_lowercase();
    if lowered == "*" || lowered == "*." {
        return Err(BadName(format!(
            "{entry:?}: a bare \"*\" would match every name; use \"0.0.0.0/0\" for all traffic, or \"*.example.com\" for the names under a domain"
        )));
    }
    let (wildcard, name) = match lowered.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lowered.as_str()),
    };
    check_name(name)
        .map_err(|why| BadName(format!("{entry:?} is not a valid domain name: {why}")))?;
    let name = name.trim_end_matches('.').to_string();
    Ok(if wildcard {
        NameRule::Under(name)
    } else {
        NameRule::Exact(name)
    })
}

fn check_name(name: &str) -> Result<(), String> {
    if !name.is_ascii() {
        return Err(
            "non-ASCII characters; write an internationalized name in its ASCII (xn--) form".into(),
        );
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("longer than {MAX_NAME} characters"));
    }
    if name.contains('*') {
        return Err("a wildcard may only be a leading \"*.\"".into());
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err("an empty label (two dots in a row, or a leading dot)".into());
        }
        if label.len() > MAX_LABEL {
            return Err(format!(
                "label {label:?} is longer than {MAX_LABEL} characters"
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "{c:?} is not allowed in a name (letters, digits, '-' and '_' only)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    // RFC 3696: a top-level label is never all digits; such an entry is a
    // mistyped address (`10.0.0.256`), not a name.
    if labels
        .last()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("it looks like an IP address but is not one".into());
    }
    Ok(())
}

/// A set of name rules, matched in time proportional to the name's labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NameSet {
    exact: HashSet<String>,
    under: HashSet<String>,
}

impl NameSet {
    pub(crate) fn from_rules(rules: impl IntoIterator<Item = NameRule>) -> Self {
        let mut set = Self::default();
        for rule in rules {
            match rule {
                NameRule::Exact(n) => set.exact.insert(n),
                NameRule::Under(n) => set.under.insert(n),
            };
        }
        set
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.under.is_empty()
    }

    /// Whether `name` (any case, with or without the trailing dot) matches.
    pub(crate) fn matches(&self, name: &str) -> bool {
        let Some(name) = normalize(name) else {
            return false;
        };
        if self.exact.contains(name.as_str()) {
            return true;
        }
        // Every proper suffix at a label boundary: a.b.c -> b.c, c.
        let mut rest = name.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if self.under.contains(parent) {
                return true;
            }
            rest = parent;
        }
        false
    }
}

/// Lower-case without the trailing dot; `None` for what cannot be a name
/// (empty, an IP literal, spaces): such a "name" matches no rule.
pub(crate) fn normalize(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.');
    if name.is_empty()
        || name.len() > MAX_NAME
        || name.parse::<std::net::IpAddr>().is_ok()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rules: &[&str]) -> NameSet {
        NameSet::from_rules(rules.iter().map(|r| parse(r).unwrap()))
    }

    #[test]
    fn exact_and_wildcard_rules() {
        let s = set(&["Example.COM", "*.cdn.test."]);
        assert!(s.matches("example.com"));
        assert!(s.matches("EXAMPLE.com."));
        assert!(!s.matches("www.example.com"), "exact means that name only");
        assert!(s.matches("a.cdn.test"));
        assert!(s.matches("a.b.cdn.test."));
        assert!(!s.matches("cdn.test"), "a wildcard leaves the apex out");
        assert!(!s.matches("xcdn.test"), "labels, not characters");
        assert!(!s.matches("192.0.2.1"));
        assert!(!s.matches(""));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (entry, why) in [
            ("*", "bare"),
            ("*.", "bare"),
            ("a.*.com", "leading"),
            ("*foo.com", "leading"),
            ("ex ample.com", "not allowed"),
            ("-a.com", "starts or ends"),
            ("a..com", "empty label"),
            ("10.0.0.256", "IP address"),
            ("bücher.de", "xn--"),
            (&format!("{}.com", "a".repeat(64)), "longer than 63"),
            (&format!("{}com", "a.".repeat(127)), "longer than 253"),
        ] {
            let err = parse(entry).unwrap_err().0;
            assert!(err.contains(why), "{entry}: {err}");
        }
        assert_eq!(
            parse("*.Example.com").unwrap(),
            NameRule::Under("example.com".into())
        );
        assert_eq!(
            parse("_svc.x.io").unwrap(),
            NameRule::Exact("_svc.x.io".into())
        );
    }
}

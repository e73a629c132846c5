//! `${VAR}` and `${VAR:-default}` substitution in the configuration text,
//! done before the YAML is parsed so that it works anywhere in the file.
//!
//! - `${VAR}` is replaced by the value of the environment variable `VAR`; an
//!   unset variable is an error naming it.
//! - `${VAR:-default}` uses `default` when `VAR` is unset or empty.
//! - `$${` writes a literal `${`; any other `$` is kept as is.
//! - Lines whose first non-blank character is `#` (YAML comments) are left
//!   untouched, so commented-out settings may mention unset variables.
//!
//! Values are inserted verbatim: a value containing YAML syntax (`: `, ` #`,
//! a leading `*` …) should be used inside a quoted string.

use super::error::ConfigProblem;

/// Substitutes every reference in `text`, looking variables up with
/// `lookup`; returns every problem found, not only the first.
pub(crate) fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<ConfigProblem>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (line_index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(dollar) = rest.find('$') {
            out.push_str(&rest[..dollar]);
            let after = &rest[dollar..];
            if let Some(tail) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = tail;
                continue;
            }
            let Some(body_and_tail) = after.strip_prefix("${") else {
                out.push('$');
                rest = &after[1..];
                continue;
            };
            let column = line[..line.len() - after.len()].chars().count() + 1;
            let at = format!("line {}, column {column}", line_index + 1);
            let Some(close) = body_and_tail.find('}') else {
                problems.push(ConfigProblem::new(
                    at,
                    "unterminated `${`: expected `${VAR}` or `${VAR:-default}` (write `$${` for a literal `${`)",
                ));
                out.push_str(after);
                rest = "";
                break;
            };
            let body = &body_and_tail[..close];
            rest = &body_and_tail[close + 1..];
            let (name, default) = match body.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (body, None),
            };
            if !is_variable_name(name) {
                problems.push(ConfigProblem::new(
                    at,
                    format!(
                        "invalid environment variable reference `${{{body}}}`: a name is letters, digits and `_`, not starting with a digit"
                    ),
                ));
                continue;
            }
            match (lookup(name), default) {
                (Some(value), Some(_)) if !value.is_empty() => out.push_str(&value),
                (Some(value), None) => out.push_str(&value),
                (_, Some(default)) => out.push_str(default),
                (None, None) => problems.push(ConfigProblem::new(
                    at,
                    format!(
                        "environment variable `{name}` is not set (write `${{{name}:-default}}` to give a default)"
                    ),
                )),
            }
        }
        out.push_str(rest);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.internal".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_variables_and_defaults() {
        let text = "a: ${HOST}:5432\nb: ${PORT:-6432}\nc: ${EMPTY:-x}${EMPTY}\nd: ${HOST:-x}\n";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "a: db.internal:5432\nb: 6432\nc: x\nd: db.internal\n"
        );
    }

    #[test]
    fn escapes_and_lone_dollars_are_kept() {
        let text = "a: pa$$word $${HOST} $x $\n";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "a: pa$$word ${HOST} $x $\n"
        );
    }

    #[test]
    fn comment_lines_are_not_interpolated() {
        let text = "  # url: ${UNSET}\na: 1";
        assert_eq!(interpolate(text, env).unwrap(), text);
    }

    #[test]
    fn reports_every_unset_variable_with_its_position() {
        let problems = interpolate("a: ${HOST}\nb: x${NOPE}\nc: ${ALSO_NOPE}", env).unwrap_err();
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].field, "line 2, column 5");
        assert!(
            problems[0].message.contains("`NOPE` is not set"),
            "{}",
            problems[0].message
        );
        assert_eq!(problems[1].field, "line 3, column 4");
        assert!(problems[1].message.contains("`ALSO_NOPE`"));
    }

    #[test]
    fn reports_malformed_references() {
        let problems = interpolate("a: ${1X}\nb: ${HOST", env).unwrap_err();
        assert_eq!(problems.len(), 2);
        assert!(problems[0]
            .message
            .contains("invalid environment variable reference `${1X}`"));
        assert!(problems[1].message.contains("unterminated"));
    }
}

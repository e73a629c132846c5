//! Subject templates and the sanitising of identifiers into subject tokens.

use cdc_core::ChangeEvent;

/// A placeholder of the subject template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    Prefix,
    Schema,
    Table,
    Op,
}

/// One piece of a subject token.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Value(Placeholder),
}

/// A parsed subject template such as `cdc.{schema}.{table}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    /// Dot-separated tokens, each a run of parts.
    tokens: Vec<Vec<Part>>,
}

impl SubjectTemplate {
    /// Parses a template. Its literal text must form a valid publish
    /// subject: non-empty dot-separated tokens, no white space, no `*` or
    /// `>`; placeholders are `{prefix}`, `{schema}`, `{table}`, `{op}`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".to_owned());
        }
        let mut tokens = Vec::new();
        for token in text.split('.') {
            let mut parts = Vec::new();
            let mut rest = token;
            while !rest.is_empty() {
                if let Some(after) = rest.strip_prefix('{') {
                    let Some(end) = after.find('}') else {
                        return Err(format!("`{text}`: `{{` without a closing `}}`"));
                    };
                    let kind = match &after[..end] {
                        "prefix" => Placeholder::Prefix,
                        "schema" => Placeholder::Schema,
                        "table" => Placeholder::Table,
                        "op" => Placeholder::Op,
                        other => {
                            return Err(format!(
                                "`{text}`: unknown placeholder `{{{other}}}`, expected {{prefix}}, {{schema}}, {{table}} or {{op}}"
                            ))
                        }
                    };
                    parts.push(Part::Value(kind));
                    rest = &after[end + 1..];
                } else {
                    let end = rest.find('{').unwrap_or(rest.len());
                    let literal = &rest[..end];
                    if let Some(c) = literal.chars().find(|c| {
                        c.is_whitespace() || c.is_control() || matches!(c, '*' | '>' | '}')
                    }) {
                        return Err(format!(
                            "`{text}`: {c:?} is not allowed in a subject (no white space, `*`, `>`)"
                        ));
                    }
                    parts.push(Part::Literal(literal.to_owned()));
                    rest = &rest[end..];
                }
            }
            if parts.is_empty() {
                return Err(format!(
                    "`{text}` has an empty token (`..` or a dot at either end)"
                ));
            }
            tokens.push(parts);
        }
        Ok(Self { tokens })
    }

    /// The subject filter matching every subject of the template: each token
    /// holding a placeholder becomes `*` (`cdc.{schema}.{table}` → `cdc.*.*`).
    pub fn filter(&self) -> String {
        let tokens: Vec<String> = self
            .tokens
            .iter()
            .map(|parts| {
                if parts.iter().any(|p| matches!(p, Part::Value(_))) {
                    "*".to_owned()
                } else {
                    parts
                        .iter()
                        .map(|p| match p {
                            Part::Literal(l) => l.as_str(),
                            Part::Value(_) => "*",
                        })
                        .collect()
                }
            })
            .collect();
        tokens.join(".")
    }

    /// Writes the subject of `event` into `out` (cleared first). `prefix` is
    /// the value of `{prefix}`.
    pub fn render(&self, prefix: &str, event: &ChangeEvent, out: &mut String) {
        out.clear();
        for (i, parts) in self.tokens.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            for part in parts {
                match part {
                    Part::Literal(l) => out.push_str(l),
                    Part::Value(Placeholder::Prefix) => push_sanitised(out, prefix),
                    Part::Value(Placeholder::Schema) => {
                        push_sanitised(out, &event.table.name.schema)
                    }
                    Part::Value(Placeholder::Table) => push_sanitised(out, &event.table.name.name),
                    Part::Value(Placeholder::Op) => out.push_str(event.op.code()),
                }
            }
        }
    }
}

/// Appends `value` as (part of) one subject token: `.`, `*`, `>`, white
/// space and control characters become `_`; an empty value becomes `_`.
/// Everything else, including non-ASCII letters and case, is kept.
pub fn push_sanitised(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push('_');
        return;
    }
    out.extend(value.chars().map(|c| {
        if c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>') {
            '_'
        } else {
            c
        }
    }));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;

    use cdc_core::{Op, ReplicaIdentity, SourceInfo, TableName, TableSchema};

    use super::*;

    fn event(schema: &str, table: &str, op: Op) -> ChangeEvent {
        ChangeEvent {
            op,
            table: Arc::new(TableSchema {
                database: "db".into(),
                oid: 1,
                name: TableName::new(schema, table),
                columns: Vec::new(),
                replica_identity: ReplicaIdentity::Default,
            }),
            before: None,
            after: None,
            source: SourceInfo::default(),
        }
    }

    fn render(template: &str, prefix: &str, ev: &ChangeEvent) -> String {
        let mut s = String::new();
        SubjectTemplate::parse(template)
            .unwrap()
            .render(prefix, ev, &mut s);
        s
    }

    #[test]
    fn renders_placeholders() {
        let ev = event("public", "users", Op::Insert);
        assert_eq!(render("cdc.{schema}.{table}", "p", &ev), "cdc.public.users");
        assert_eq!(
            render("{prefix}.db_{schema}.{table}.{op}", "app", &ev),
            "app.db_public.users.c"
        );
    }

    #[test]
    fn sanitises_identifiers() {
        let ev = event("My Schema", "a.b*c>d\te", Op::Delete);
        assert_eq!(
            render("cdc.{schema}.{table}", "", &ev),
            "cdc.My_Schema.a_b_c_d_e"
        );
        assert_eq!(render("{prefix}.x", "", &ev), "_.x");
        assert_eq!(render("{prefix}", "Ünï-\"q\"", &ev), "Ünï-\"q\"");
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in [
            "",
            "cdc..x",
            "cdc.",
            "cdc.{tabel}",
            "cdc.{table",
            "cdc.*",
            "a b.{table}",
            "cdc.>",
        ] {
            assert!(SubjectTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters() {
        let f = |t: &str| SubjectTemplate::parse(t).unwrap().filter();
        assert_eq!(f("cdc.{schema}.{table}"), "cdc.*.*");
        assert_eq!(f("x.t_{table}.{op}.y"), "x.*.*.y");
    }
}

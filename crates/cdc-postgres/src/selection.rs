//! Choosing tables by pattern: `schema.*`, globs and regular expressions
//! beside exact names, with exclusions, resolved against the catalog when
//! the source starts.
//!
//! ```
//! use cdc_core::TableName;
//! use cdc_postgres::selection::TablePattern;
//!
//! let logs = TablePattern::parse("public.log_*").unwrap();
//! assert!(logs.matches(&TableName::new("public", "log_2026")));
//! assert!(!logs.matches(&TableName::new("audit", "log_2026")));
//! let all_sales = TablePattern::parse("sales.*").unwrap();
//! assert!(all_sales.matches(&TableName::new("sales", "orders")));
//! let re = TablePattern::parse(r"/^shop\.(orders|items)_\d+$/").unwrap();
//! assert!(re.matches(&TableName::new("shop", "orders_7")));
//! ```

use std::fmt;

use cdc_core::TableName;
use sqlx::{PgConnection, Row};

use crate::error::PgError;

/// One entry of a table selection.
#[derive(Clone)]
#[non_exhaustive]
pub enum TablePattern {
    /// One table, by name.
    Exact(TableName),
    /// `schema.table` where unquoted parts may hold `*` (any run of
    /// characters) and `?` (one character); `schema.*` is every table of a
    /// schema. Unquoted parts are folded to lower case, quoted ones
    /// (`"Sales".*`) are taken as written and hold no wildcards.
    Glob {
        /// The pattern's text, as written.
        text: String,
        /// The schema part, as a regular expression.
        schema: regex::Regex,
        /// The table part, as a regular expression.
        name: regex::Regex,
    },
    /// `/regex/`: matched against `schema.table` (the names as the
    /// catalog spells them, unquoted, joined by a dot).
    Regex(regex::Regex),
}

/// Equal when they select the same tables by the same rule (`Sales.*` and
/// `sales.*` are equal: both fold to `sales`).
impl PartialEq for TablePattern {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (TablePattern::Exact(a), TablePattern::Exact(b)) => a == b,
            (
                TablePattern::Glob {
                    schema: s1,
                    name: n1,
                    ..
                },
                TablePattern::Glob {
                    schema: s2,
                    name: n2,
                    ..
                },
            ) => s1.as_str() == s2.as_str() && n1.as_str() == n2.as_str(),
            (TablePattern::Regex(a), TablePattern::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for TablePattern {}

impl fmt::Debug for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TablePattern::Exact(t) => write!(f, "{t}"),
            TablePattern::Glob { text, .. } => f.write_str(text),
            TablePattern::Regex(re) => write!(f, "/{}/", re.as_str()),
        }
    }
}

/// One dot-separated part of a glob, as parsed.
struct Part {
    text: String,
    quoted: bool,
}

impl TablePattern {
    /// Whether `text` is a pattern rather than a plain table name: it is
    /// `/…/`, or an unquoted part holds `*` or `?`.
    pub fn is_pattern_text(text: &str) -> bool {
        if text.len() >= 2 && text.starts_with('/') && text.ends_with('/') {
            return true;
        }
        let mut quoted = false;
        for ch in text.chars() {
            match ch {
                '"' => quoted = !quoted,
                '*' | '?' if !quoted => return true,
                _ => {}
            }
        }
        false
    }

    /// Parses a glob or `/regex/` (see [`TablePattern`]); a text without
    /// wildcards is an error here (parse it as a table name instead).
    pub fn parse(text: &str) -> Result<TablePattern, String> {
        if text.len() >= 2 && text.starts_with('/') && text.ends_with('/') {
            let inner = &text[1..text.len() - 1];
            return regex::Regex::new(inner)
                .map(TablePattern::Regex)
                .map_err(|e| format!("invalid regular expression `{inner}`: {e}"));
        }
        let parts = split_parts(text)?;
        let [schema, name] = <[Part; 2]>::try_from(parts).map_err(|parts| {
            format!(
                "expected `schema.table` (either part may use * and ?), found {} dot-separated part(s)",
                parts.len()
            )
        })?;
        if !schema.quoted && !name.quoted && !has_wildcard(&schema) && !has_wildcard(&name) {
            return Err("no wildcard: this is a table name, not a pattern".into());
        }
        Ok(TablePattern::Glob {
            text: text.to_owned(),
            schema: glob_regex(&schema)?,
            name: glob_regex(&name)?,
        })
    }

    /// Whether `table` is selected by this entry.
    pub fn matches(&self, table: &TableName) -> bool {
        match self {
            TablePattern::Exact(t) => t == table,
            TablePattern::Glob { schema, name, .. } => {
                schema.is_match(&table.schema) && name.is_match(&table.name)
            }
            TablePattern::Regex(re) => re.is_match(&format!("{}.{}", table.schema, table.name)),
        }
    }
}

fn has_wildcard(part: &Part) -> bool {
    !part.quoted && part.text.contains(['*', '?'])
}

/// Splits on unquoted dots; unquoted parts folded to lower case, `""` in
/// a quoted part is one `"`.
fn split_parts(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut part = Part {
            text: String::new(),
            quoted: false,
        };
        if chars.peek() == Some(&'"') {
            chars.next();
            part.quoted = true;
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted identifier".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.text.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.text.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_alphanumeric() || matches!(c, '_' | '$' | '*' | '?')) {
                    return Err(format!(
                        "unexpected character `{c}`; quote identifiers containing it"
                    ));
                }
                part.text.push(c.to_ascii_lowercase());
                chars.next();
            }
        }
        if part.text.is_empty() {
            return Err("empty identifier".into());
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some('.') => continue,
            Some(c) => {
                return Err(format!(
                    "unexpected character `{c}` after a quoted identifier"
                ))
            }
        }
    }
}

/// The anchored regular expression of one glob part.
fn glob_regex(part: &Part) -> Result<regex::Regex, String> {
    let mut re = String::from("^");
    for c in part.text.chars() {
        match c {
            '*' if !part.quoted => re.push_str(".*"),
            '?' if !part.quoted => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| format!("invalid pattern: {e}"))
}

/// What to capture: tables by name and by pattern, minus exclusions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableSelection {
    /// Patterns whose matches are captured besides the tables named
    /// exactly ([`PgSourceConfig::tables`](crate::PgSourceConfig::tables)).
    pub include: Vec<TablePattern>,
    /// Tables matching any of these are left out, also when named exactly.
    pub exclude: Vec<TablePattern>,
}

impl TableSelection {
    /// Whether this selection changes nothing: no pattern, no exclusion.
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

/// Which columns of a table are captured.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ColumnSelection {
    /// Only these columns (the key columns must be among them).
    Include(Vec<String>),
    /// Every column but these (no key column among them).
    Exclude(Vec<String>),
}

/// Part of a table: some of its columns, some of its rows. Applied as the
/// table's column list and row filter in the publication (PostgreSQL
/// 15+), so that excluded values never leave the server, and read back
/// from the publication by the snapshot, so that both agree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableSubset {
    /// The columns captured; `None`: all.
    pub columns: Option<ColumnSelection>,
    /// A boolean SQL expression on the table's columns; only rows for which
    /// it is true are captured. It is SQL text from the configuration,
    /// checked by the server when the publication is created or changed.
    /// `None`: every row.
    pub row_filter: Option<String>,
}

/// What [`resolve`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The tables to capture, exact names first in their order, then the
    /// matches of the patterns ordered by schema and name.
    pub tables: Vec<TableName>,
    /// Include patterns that matched no table (worth a warning).
    pub unmatched: Vec<TablePattern>,
}

/// Resolves `exact` and `selection` against the catalog: ordinary and
/// partitioned tables (never a partition: its rows arrive through its
/// root), outside the system schemas and `metadata_schema` (the engine's
/// own tables).
pub async fn resolve(
    conn: &mut PgConnection,
    exact: &[TableName],
    selection: &TableSelection,
    metadata_schema: &str,
) -> Result<Resolved, PgError> {
    let candidates = if selection.include.is_empty() {
        Vec::new()
    } else {
        list_tables(conn, metadata_schema)
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect()
    };
    Ok(select(exact, selection, &candidates))
}

/// A table a selection may match, as [`list_tables`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub name: TableName,
    /// Its OID: a table dropped and created again under the same name has
    /// another.
    pub oid: u32,
    /// Its replica identity lets updates and deletes be published: a
    /// primary key (identity `default`), an index (`index`) or `full`.
    pub identity_ok: bool,
}

/// The tables of the database a selection may match: ordinary and
/// partitioned tables (never a partition), outside the system schemas and
/// `metadata_schema`, ordered by schema and name.
pub(crate) async fn list_tables(
    conn: &mut PgConnection,
    metadata_schema: &str,
) -> Result<Vec<Candidate>, PgError> {
    let ctx = |e| PgError::sql("listing the tables the selection may match", e);
    let rows = sqlx::query(
        "SELECT n.nspname::text AS schema, c.relname::text AS name, c.oid::pg_catalog.int8 AS oid,
                (c.relreplident IN ('f', 'i')
                 OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                                                      WHERE i.indrelid = c.oid AND i.indisprimary)))
                  AS identity_ok
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema', 'pg_toast'])
           AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
           AND n.nspname <> $1
         ORDER BY 1, 2",
    )
    .bind(metadata_schema)
    .fetch_all(&mut *conn)
    .await
    .map_err(ctx)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let schema: String = row.try_get("schema").map_err(ctx)?;
        let name: String = row.try_get("name").map_err(ctx)?;
        let oid: i64 = row.try_get("oid").map_err(ctx)?;
        out.push(Candidate {
            name: TableName::new(schema, name),
            oid: u32::try_from(oid).unwrap_or_default(),
            identity_ok: row.try_get("identity_ok").map_err(ctx)?,
        });
    }
    Ok(out)
}

/// [`resolve`] over a known list of `candidates` (pure).
pub fn select(
    exact: &[TableName],
    selection: &TableSelection,
    candidates: &[TableName],
) -> Resolved {
    let excluded = |t: &TableName| selection.exclude.iter().any(|p| p.matches(t));
    let mut tables: Vec<TableName> = Vec::new();
    for t in exact {
        if !excluded(t) && !tables.contains(t) {
            tables.push(t.clone());
        }
    }
    let mut unmatched = Vec::new();
    for pattern in &selection.include {
        let mut any = false;
        for t in candidates {
            if pattern.matches(t) {
                any = true;
                if !excluded(t) && !tables.contains(t) {
                    tables.push(t.clone());
                }
            }
        }
        if !any {
            unmatched.push(pattern.clone());
        }
    }
    Resolved { tables, unmatched }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str, n: &str) -> TableName {
        TableName::new(s, n)
    }

    #[test]
    fn globs_fold_unquoted_parts_and_keep_quoted_ones() {
        let p = TablePattern::parse("Public.Log_*").unwrap();
        assert!(p.matches(&t("public", "log_1")));
        assert!(!p.matches(&t("public", "Log_1")));
        let q = TablePattern::parse("\"Sales\".*").unwrap();
        assert!(q.matches(&t("Sales", "x")));
        assert!(!q.matches(&t("sales", "x")));
        let one = TablePattern::parse("public.t?").unwrap();
        assert!(one.matches(&t("public", "t1")) && !one.matches(&t("public", "t12")));
        // A quoted star is a star.
        let lit = TablePattern::parse("public.\"a*\"").unwrap();
        assert!(lit.matches(&t("public", "a*")) && !lit.matches(&t("public", "ab")));
        // Dots and other regex characters in names are literal.
        assert!(!TablePattern::parse("public.a$*")
            .unwrap()
            .matches(&t("public", "ab")));
    }

    #[test]
    fn regexes_match_the_dotted_name() {
        let re = TablePattern::parse(r"/^(a|b)\.x_\d+$/").unwrap();
        assert!(re.matches(&t("a", "x_1")) && re.matches(&t("b", "x_22")));
        assert!(!re.matches(&t("c", "x_1")));
        assert_eq!(re.to_string(), r"/^(a|b)\.x_\d+$/");
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(TablePattern::parse("public.users")
            .unwrap_err()
            .contains("no wildcard"));
        assert!(TablePattern::parse("*")
            .unwrap_err()
            .contains("schema.table"));
        assert!(TablePattern::parse("/(/")
            .unwrap_err()
            .contains("invalid regular expression"));
        assert!(TablePattern::parse("a b.*")
            .unwrap_err()
            .contains("unexpected character"));
        assert!(TablePattern::is_pattern_text("public.*"));
        assert!(TablePattern::is_pattern_text("/x/"));
        assert!(!TablePattern::is_pattern_text("public.\"a*\""));
        assert!(!TablePattern::is_pattern_text("public.users"));
    }

    #[test]
    fn selects_exact_names_then_matches_minus_exclusions() {
        let candidates = [t("a", "x"), t("a", "y"), t("a", "z"), t("b", "x")];
        let selection = TableSelection {
            include: vec![
                TablePattern::parse("a.*").unwrap(),
                TablePattern::parse("c.*").unwrap(),
            ],
            exclude: vec![
                TablePattern::Exact(t("a", "y")),
                TablePattern::parse("/^b\\./").unwrap(),
            ],
        };
        let got = select(&[t("b", "x"), t("a", "z")], &selection, &candidates);
        assert_eq!(
            got.tables,
            [t("a", "z"), t("a", "x")],
            "b.x is excluded even when named"
        );
        assert_eq!(got.unmatched, [TablePattern::parse("c.*").unwrap()]);
    }
}

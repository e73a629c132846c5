//! Index names from tables, and document ids from primary keys.

use cdc_core::encode::write_value;
use cdc_core::{Row, TableName, TableSchema, Value};

/// Longest index name Elasticsearch accepts, in bytes.
const MAX_INDEX_NAME: usize = 255;

/// A parsed `index` template: text with `{schema}` and `{table}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexTemplate(String);

impl IndexTemplate {
    /// Checks that `template` names the table and uses only known placeholders.
    pub(crate) fn parse(template: &str) -> Result<Self, String> {
        if !template.contains("{table}") {
            return Err(format!(
                "`{template}` must contain `{{table}}`: every table needs an index of its own"
            ));
        }
        let rest = template.replace("{schema}", "").replace("{table}", "");
        if rest.contains('{') || rest.contains('}') {
            return Err(format!(
                "`{template}`: only the placeholders {{schema}} and {{table}} are known"
            ));
        }
        Ok(Self(template.to_owned()))
    }

    /// The sanitised index name for `table` (see [`sanitize_index_name`]).
    pub(crate) fn render(&self, table: &TableName) -> Result<String, String> {
        let raw = self
            .0
            .replace("{schema}", &table.schema)
            .replace("{table}", &table.name);
        sanitize_index_name(&raw)
    }
}

/// Turns any text into a valid index name: lower-cased; every character
/// other than `a-z`, `0-9`, `_`, `-`, `.` becomes `_`; leading `_`, `-`,
/// `+` and `.` are removed; cut to 255 bytes. An empty result is an error.
pub(crate) fn sanitize_index_name(raw: &str) -> Result<String, String> {
    let lowered = raw.to_lowercase();
    let mapped: String = lowered
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' | '.' => c,
            _ => '_',
        })
        .collect();
    let trimmed = mapped.trim_start_matches(['_', '-', '+', '.']);
    let mut name = trimmed.to_owned();
    name.truncate(MAX_INDEX_NAME);
    if name.is_empty() {
        return Err(format!(
            "`{raw}` gives an empty index name after sanitising"
        ));
    }
    Ok(name)
}

/// Checks an explicitly configured index name against Elasticsearch's rules.
pub(crate) fn check_index_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("`{name}` is not a valid index name"));
    }
    if name.len() > MAX_INDEX_NAME {
        return Err(format!("index name `{name}` is longer than 255 bytes"));
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return Err(format!("index name `{name}` must be lower-case"));
    }
    if let Some(c) = name.chars().find(|c| {
        matches!(
            c,
            '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
        )
    }) {
        return Err(format!("index name `{name}` must not contain {c:?}"));
    }
    if name.starts_with(['-', '_', '+']) {
        return Err(format!(
            "index name `{name}` must not start with `-`, `_` or `+`"
        ));
    }
    Ok(())
}

/// Splits `schema.table` at its first dot.
pub(crate) fn split_table(name: &str) -> Option<TableName> {
    let (schema, table) = name.split_once('.')?;
    if schema.is_empty() || table.is_empty() {
        return None;
    }
    Some(TableName::new(schema, table))
}

/// The document `_id` of `row`: with one key column, the key's `to_jsonb`
/// rendering with the quotes of a JSON string removed (`42`, `abc`,
/// `5f0c…-…`); with several, the JSON array of their renderings, compact
/// (`[1,"abc"]`). `Err` when the table has no key or a key value is
/// missing.
pub(crate) fn document_id(schema: &TableSchema, row: &Row) -> Result<String, String> {
    let keys: Vec<usize> = schema.key_indices().collect();
    if keys.is_empty() {
        return Err(format!(
            "table {} has no primary key (nor replica identity columns): documents need an _id",
            schema.name
        ));
    }
    let mut rendered = Vec::with_capacity(keys.len());
    for &i in &keys {
        let value = row.values().get(i).ok_or_else(|| {
            format!(
                "table {}: the row has no value for key column {i}",
                schema.name
            )
        })?;
        if matches!(value, Value::Null | Value::UnchangedToast) {
            let column = schema
                .columns
                .get(i)
                .map(|c| c.name.as_str())
                .unwrap_or("?");
            return Err(format!(
                "table {}: key column {column} has no value in this change",
                schema.name
            ));
        }
        let mut out = Vec::new();
        write_value(&mut out, value);
        rendered.push(out);
    }
    let bytes = if let [single] = rendered.as_slice() {
        match serde_json::from_slice::<String>(single) {
            Ok(s) => return Ok(s),
            Err(_) => single.clone(),
        }
    } else {
        let mut out = vec![b'['];
        for (n, r) in rendered.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&compact(r));
        }
        out.push(b']');
        out
    };
    String::from_utf8(bytes).map_err(|e| format!("table {}: key is not UTF-8: {e}", schema.name))
}

/// `to_jsonb` renders arrays with `", "`; ids use the compact form. Values
/// inside strings are left alone.
fn compact(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
            out.push(b);
        } else if !b.is_ascii_whitespace() {
            out.push(b);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use cdc_core::{Column, ReplicaIdentity};

    fn schema(keys: &[bool]) -> TableSchema {
        TableSchema {
            database: "db".into(),
            oid: 1,
            name: TableName::new("public", "T"),
            columns: keys
                .iter()
                .enumerate()
                .map(|(i, &k)| Column {
                    name: format!("c{i}"),
                    type_oid: 25,
                    type_name: "text".into(),
                    type_modifier: -1,
                    nullable: true,
                    is_key: k,
                })
                .collect(),
            replica_identity: ReplicaIdentity::Default,
        }
    }

    #[test]
    fn index_names_are_sanitised() {
        let t = IndexTemplate::parse("{schema}.{table}").unwrap();
        assert_eq!(
            t.render(&TableName::new("Public", "My Table")).unwrap(),
            "public.my_table"
        );
        assert_eq!(t.render(&TableName::new("_s", "a*b")).unwrap(), "s.a_b");
        let t = IndexTemplate::parse("cdc-{table}").unwrap();
        assert_eq!(t.render(&TableName::new("x", "Ünï")).unwrap(), "cdc-_n_");
        assert!(sanitize_index_name("..__").is_err());
        assert_eq!(sanitize_index_name(&"a".repeat(300)).unwrap().len(), 255);
        assert!(IndexTemplate::parse("{schema}").is_err());
        assert!(IndexTemplate::parse("{table}-{db}").is_err());
    }

    #[test]
    fn explicit_names_are_checked() {
        assert!(check_index_name("users-v1").is_ok());
        assert!(check_index_name("Users").is_err());
        assert!(check_index_name("_x").is_err());
        assert!(check_index_name("a b").is_err());
        assert!(check_index_name("").is_err());
    }

    #[test]
    fn ids() {
        let s = schema(&[true, false]);
        let row = Row::new(vec![Value::Int4(42), Value::Text("x".into())]);
        assert_eq!(document_id(&s, &row).unwrap(), "42");
        let row = Row::new(vec![Value::Text("a\"b".into()), Value::Null]);
        assert_eq!(document_id(&s, &row).unwrap(), "a\"b");
        let s = schema(&[true, true]);
        let row = Row::new(vec![
            Value::Int8(1),
            Value::Array(vec![Value::Text("a, b".into()), Value::Int2(2)].into()),
        ]);
        assert_eq!(document_id(&s, &row).unwrap(), r#"[1,["a, b",2]]"#);
        let row = Row::new(vec![Value::Int8(1), Value::Null]);
        assert!(document_id(&s, &row).is_err());
        assert!(document_id(&schema(&[false]), &Row::new(vec![Value::Int4(1)])).is_err());
    }
}

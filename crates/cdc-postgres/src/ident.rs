//! Quoting of SQL identifiers and literals. Every name that comes from
//! configuration goes through here before it reaches SQL.

use cdc_core::TableName;

/// `name` as a quoted SQL identifier: `"Odd ""name"""`.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A table as a quoted, schema-qualified SQL name: `"public"."users"`.
pub fn quote_table(table: &TableName) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.name)
    )
}

/// `text` as a quoted SQL string literal (standard_conforming_strings on).
pub fn quote_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn quotes() {
        assert_eq!(quote_ident("users"), "\"users\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            quote_table(&TableName::new("My Schema", "odd \"t\"")),
            "\"My Schema\".\"odd \"\"t\"\"\""
        );
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}

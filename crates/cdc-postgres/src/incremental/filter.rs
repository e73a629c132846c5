//! The `where` filter of an incremental snapshot: SQL text from the
//! operator, a boolean condition on the table's columns, added to every
//! chunk read as `AND (<filter>)`.
//!
//! It is SQL and runs with the engine's role, so it is checked twice
//! before it is used: [`check_filter_text`] makes sure it cannot reach
//! outside its parentheses (every parenthesis it opens it closes, it closes
//! none it did not open, and it has no `;`, all outside string literals,
//! quoted identifiers and comments), and [`validate_filter`] has the server
//! parse and plan it against the table (`EXPLAIN`, in a read-only
//! transaction), so a mistake is reported when the snapshot is asked for
//! rather than when its first chunk is read.

use cdc_core::TableName;
use sqlx::{AssertSqlSafe, PgConnection};

use crate::error::PgError;
use crate::ident::quote_table;

/// The longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;

/// `AND (<filter>\n)`: the line break ends a `--` comment the filter may
/// end with.
pub(crate) fn filter_condition(filter: &str) -> String {
    format!("({filter}\n)")
}

/// Checks that `filter` stays inside the parentheses it is put in: see the
/// module documentation. The server checks the rest
/// ([`validate_filter`]).
pub fn check_filter_text(filter: &str) -> Result<(), String> {
    if filter.trim().is_empty() {
        return Err("the filter is empty".into());
    }
    if filter.len() > MAX_FILTER_LEN {
        return Err(format!("the filter is longer than {MAX_FILTER_LEN} bytes"));
    }
    if filter.contains('\0') {
        return Err("the filter holds a NUL character".into());
    }
    let b = filter.as_bytes();
    let mut depth: usize = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'(' => depth += 1,
            b')' => {
                depth = depth.checked_sub(1).ok_or(
                    "the filter closes a parenthesis it did not open: it must be one condition",
                )?;
            }
            b';' => return Err("the filter holds a `;`: it must be one condition".into()),
            b'\'' => {
                // E'…' (and e'…') take backslash escapes.
                let escapes =
                    i > 0 && matches!(b[i - 1], b'E' | b'e') && (i < 2 || !is_ident_byte(b[i - 2]));
                i = end_of_quoted(b, i, b'\'', escapes).ok_or("unterminated string literal")?;
                continue;
            }
            b'"' => {
                i = end_of_quoted(b, i, b'"', false).ok_or("unterminated quoted identifier")?;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                // To the end of the line (the filter is followed by one).
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |n| i + n + 1);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = end_of_block_comment(b, i).ok_or("unterminated /* comment")?;
                continue;
            }
            b'$' if i == 0 || !is_ident_byte(b[i - 1]) => {
                if let Some(tag_end) = dollar_tag(b, i) {
                    let tag = &b[i..=tag_end];
                    let body = tag_end + 1;
                    let close = b[body..]
                        .windows(tag.len())
                        .position(|w| w == tag)
                        .ok_or("unterminated dollar-quoted string")?;
                    i = body + close + tag.len();
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    if depth > 0 {
        return Err("the filter leaves a parenthesis open".into());
    }
    Ok(())
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// The index after the quote closing the one at `start` (a doubled quote
/// stands for itself; with `escapes`, a backslash escapes the next byte).
fn end_of_quoted(b: &[u8], start: usize, quote: u8, escapes: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        if escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// The index after the `*/` closing the (nested) comment at `start`.
fn end_of_block_comment(b: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The index of the `$` ending the dollar-quote tag at `start` (`$$`,
/// `$tag$`); `None` when `start` is a parameter (`$1`) or a lone `$`.
fn dollar_tag(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if b.get(i).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    while let Some(&c) = b.get(i) {
        if c == b'$' {
            return Some(i);
        }
        if !(c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80) {
            return None;
        }
        i += 1;
    }
    None
}

/// Has the server parse and plan `filter` against `table` (`EXPLAIN SELECT
/// 1 FROM table AS c WHERE (<filter>)`, in a read-only transaction rolled
/// back after): a syntax error, an unknown column or a condition that is
/// not boolean is reported naming the table. Runs
/// [`check_filter_text`] first.
pub async fn validate_filter(
    conn: &mut PgConnection,
    table: &TableName,
    filter: &str,
) -> Result<(), PgError> {
    check_filter_text(filter).map_err(|e| PgError::Setup(format!("filter for {table}: {e}")))?;
    let sql = format!(
        "EXPLAIN SELECT 1 FROM {} AS c WHERE {}",
        quote_table(table),
        filter_condition(filter)
    );
    // The text was checked for standard strings (no backslash escapes).
    sqlx::raw_sql("BEGIN READ ONLY; SET LOCAL standard_conforming_strings = on")
        .execute(&mut *conn)
        .await
        .map_err(|e| PgError::sql("checking a snapshot filter", e))?;
    let result = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await;
    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) => Err(PgError::Setup(format!(
            "filter for {table} is not a valid condition on it: {}",
            db.message()
        ))),
        Err(e) => Err(PgError::sql(format!("checking the filter for {table}"), e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn conditions_with_parentheses_strings_and_comments_pass() {
        for ok in [
            "updated_at > now() - interval '1 day'",
            "(a = 1 OR b = 2) AND c IN (1, 2)",
            "note = 'it''s (not) closed'",
            "note = E'a\\' ) b'",
            "\"odd ) name\" = 1",
            "a = 1 -- ) trailing comment",
            "a = 1 /* ) /* nested ) */ */",
            "note = $$ ) ; $$ AND b = $t$ ( $t$",
            "a$b = 1",
        ] {
            assert_eq!(check_filter_text(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn text_that_would_escape_its_parentheses_is_refused() {
        for bad in [
            "",
            "  ",
            "true) OR (true",
            "a = 1)",
            "(a = 1",
            "a = 1; DROP TABLE t",
            "note = 'open",
            "note = E'a\\'",
            "\"open",
            "a = 1 /* open",
            "note = $$ open",
        ] {
            assert!(check_filter_text(bad).is_err(), "{bad:?} passed");
        }
        assert!(check_filter_text(&"a".repeat(MAX_FILTER_LEN + 1)).is_err());
    }
}

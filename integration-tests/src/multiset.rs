//! Rows compared as multisets: each row as [`canonical`] JSON text (object
//! keys sorted), the texts sorted ([`multiset`]), and how two such
//! multisets differ ([`multiset_diff`]).

use std::collections::BTreeMap;

use serde_json::Value as Json;

/// A JSON value as text with every object's keys sorted, so row objects
/// compare as strings (for multiset comparisons).
pub fn canonical(v: &Json) -> String {
    fn write(v: &Json, out: &mut String) {
        match v {
            Json::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Json::String(k.clone()).to_string());
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// Sorted canonical texts of `rows`.
pub fn multiset<'a>(rows: impl IntoIterator<Item = &'a Json>) -> Vec<String> {
    let mut v: Vec<String> = rows.into_iter().map(canonical).collect();
    v.sort();
    v
}

/// Describes how two sorted multisets (`got`, `want`) differ (`None`
/// when equal).
pub fn multiset_diff(got: &[String], want: &[String]) -> Option<String> {
    if got == want {
        return None;
    }
    let mut g: BTreeMap<&str, i64> = BTreeMap::new();
    for s in got {
        *g.entry(s).or_default() += 1;
    }
    for s in want {
        *g.entry(s).or_default() -= 1;
    }
    let mut out: Vec<String> = g
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|(s, n)| {
            let s = if s.len() > 200 {
                format!("{}… ({} bytes)", &s[..s.floor_char_boundary(200)], s.len())
            } else {
                s.to_owned()
            };
            if n > 0 {
                format!("{n} extra: {s}")
            } else {
                format!("{} missing: {s}", -n)
            }
        })
        .collect();
    let n = out.len();
    out.truncate(20);
    Some(format!(
        "{} rows, {} wanted; {n} distinct difference(s):\n  {}",
        got.len(),
        want.len(),
        out.join("\n  ")
    ))
}

//! `source.columns`: the columns captured of a table.

use serde::Deserialize;

/// `source.columns.<table>`: `{ include: [a, b] }` or `{ exclude: [c] }`,
/// exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ColumnsConfig {
    /// `include`: only these columns (names as the catalog spells them).
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// `exclude`: every column but these.
    #[serde(default)]
    pub exclude: Option<Vec<String>>,
}

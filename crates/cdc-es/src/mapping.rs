//! Index mappings derived from a table's column types.
//!
//! An index the sink creates gets `dynamic: false` and one property per
//! column, chosen by the column's type (see the crate docs for the table).
//! Every property accepts every value the sink writes for its type, so no
//! row is refused for its values: numbers and dates that the field cannot
//! hold (`NaN`, `Infinity`, `infinity`, BC dates, years past 9999, numerics
//! beyond the double range) are skipped by `ignore_malformed` and stay in
//! `_source` exactly; JSON goes to a disabled object (kept in `_source`, not
//! indexed), which takes any JSON value.

use cdc_core::{Column, TableSchema};
use serde_json::{json, Map, Value as Json};

/// `_meta` key that marks an index whose mapping this sink manages.
pub(crate) const META_KEY: &str = "cdc_es";

/// Longest keyword (in characters) indexed for columns mapped as
/// `keyword`: 8191 characters of up to 4 UTF-8 bytes stay below Lucene's
/// 32766-byte term limit. Longer values stay in `_source`, unindexed.
const KEYWORD_IGNORE_ABOVE: u32 = 8191;

/// `ignore_above` of the `keyword` sub-field of text columns (what
/// Elasticsearch's own dynamic mapping uses).
const TEXT_KEYWORD_IGNORE_ABOVE: u32 = 256;

/// First OID of objects created after `initdb` (`FirstNormalObjectId`):
/// built-in types have smaller OIDs, fixed across versions.
const FIRST_NORMAL_OID: u32 = 16384;

/// What a column is indexed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Boolean,
    Short,
    Integer,
    Long,
    Float,
    Double,
    Date,
    Text,
    Keyword,
    /// Kept in `_source` only (`{"type": "object", "enabled": false}`):
    /// accepts any JSON value.
    Disabled,
}

impl FieldKind {
    fn property(self) -> Json {
        match self {
            FieldKind::Boolean => json!({"type": "boolean"}),
            FieldKind::Short => json!({"type": "short"}),
            FieldKind::Integer => json!({"type": "integer"}),
            FieldKind::Long => json!({"type": "long"}),
            FieldKind::Float => json!({"type": "float", "ignore_malformed": true}),
            FieldKind::Double => json!({"type": "double", "ignore_malformed": true}),
            FieldKind::Date => json!({
                "type": "date",
                "format": "strict_date_optional_time",
                "ignore_malformed": true
            }),
            FieldKind::Text => json!({
                "type": "text",
                "fields": {"keyword": {"type": "keyword", "ignore_above": TEXT_KEYWORD_IGNORE_ABOVE}}
            }),
            FieldKind::Keyword => json!({"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}),
            FieldKind::Disabled => json!({"type": "object", "enabled": false}),
        }
    }
}

/// The kind of a built-in scalar type, by OID; `None` for built-in array
/// types and for OIDs that are not built in.
fn builtin_scalar(oid: u32) -> Option<FieldKind> {
    use FieldKind as K;
    Some(match oid {
        16 => K::Boolean,                      // bool
        21 => K::Short,                        // int2
        23 => K::Integer,                      // int4
        20 | 26 => K::Long,                    // int8, oid
        700 => K::Float,                       // float4
        701 | 1700 => K::Double,               // float8, numeric
        1082 | 1114 | 1184 => K::Date,         // date, timestamp, timestamptz
        18 | 19 | 25 | 1042 | 1043 => K::Text, // "char", name, text, bpchar, varchar
        114 | 3802 => K::Disabled,             // json, jsonb
        // Every other built-in type: its text form.
        o if o < FIRST_NORMAL_OID && builtin_array_element(o).is_none() => K::Keyword,
        _ => return None,
    })
}

/// Element OID of the built-in array types whose element has its own kind.
fn builtin_array_element(oid: u32) -> Option<u32> {
    Some(match oid {
        1000 => 16,
        1005 => 21,
        1007 => 23,
        1016 => 20,
        1028 => 26,
        1021 => 700,
        1022 => 701,
        1231 => 1700,
        1182 => 1082,
        1115 => 1114,
        1185 => 1184,
        1002 => 18,
        1003 => 19,
        1009 => 25,
        1014 => 1042,
        1015 => 1043,
        199 => 114,
        3807 => 3802,
        _ => return None,
    })
}

/// What `column` is indexed as.
fn field_kind(column: &Column) -> FieldKind {
    let oid = column.type_oid;
    if let Some(kind) = builtin_scalar(oid) {
        return kind;
    }
    if let Some(element) = builtin_array_element(oid) {
        return builtin_scalar(element).unwrap_or(FieldKind::Keyword);
    }
    if oid < FIRST_NORMAL_OID {
        // Any other built-in array: its elements' text forms.
        return FieldKind::Keyword;
    }
    // Types created in the database: extension types known by name;
    // enums, domains and composite types cannot be told apart here (a
    // domain over jsonb sends objects), so they are kept unindexed.
    match column.type_name.trim_start_matches('_') {
        "citext" => FieldKind::Text,
        _ => FieldKind::Disabled,
    }
}

/// Whether a column gets a property: not when its name is empty or holds
/// a dot (Elasticsearch reads `a.b` as field `b` of an object `a`, which
/// can clash with a column `a`). Such a column stays in the documents,
/// unindexed (`dynamic: false`).
pub(crate) fn mappable(name: &str) -> bool {
    !name.is_empty() && !name.contains('.')
}

/// The `properties` of `columns` (those [`mappable`]).
pub(crate) fn properties<'a>(columns: impl IntoIterator<Item = &'a Column>) -> Map<String, Json> {
    columns
        .into_iter()
        .filter(|c| mappable(&c.name))
        .map(|c| (c.name.clone(), field_kind(c).property()))
        .collect()
}

/// The `mappings` of a new index for `schema`.
pub(crate) fn mappings(schema: &TableSchema) -> Json {
    json!({
        "dynamic": false,
        "_meta": { META_KEY: { "table": schema.name.to_string() } },
        "properties": properties(&schema.columns),
    })
}

/// Whether an index's `_mapping` answer (one entry per concrete index)
/// shows every index as managed by this sink, and the names of the
/// properties all of them have.
pub(crate) fn managed_properties(answer: &Json) -> Option<Vec<String>> {
    let indices = answer.as_object()?;
    let mut common: Option<Vec<String>> = None;
    for entry in indices.values() {
        let mappings = entry.get("mappings")?;
        mappings.get("_meta")?.get(META_KEY)?;
        let names: Vec<String> = mappings
            .get("properties")
            .and_then(Json::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        common = Some(match common {
            None => names,
            Some(prev) => prev.into_iter().filter(|n| names.contains(n)).collect(),
        });
    }
    common
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use cdc_core::{ReplicaIdentity, TableName};

    fn column(name: &str, type_oid: u32, type_name: &str) -> Column {
        Column {
            name: name.into(),
            type_oid,
            type_name: type_name.into(),
            type_modifier: -1,
            nullable: true,
            is_key: false,
        }
    }

    #[test]
    fn types_map_to_fields() {
        let cases = [
            (16, "bool", "boolean"),
            (21, "int2", "short"),
            (23, "int4", "integer"),
            (20, "int8", "long"),
            (26, "oid", "long"),
            (700, "float4", "float"),
            (701, "float8", "double"),
            (1700, "numeric", "double"),
            (1082, "date", "date"),
            (1114, "timestamp", "date"),
            (1184, "timestamptz", "date"),
            (25, "text", "text"),
            (1043, "varchar", "text"),
            (1042, "bpchar", "text"),
            (19, "name", "text"),
            (114, "json", "object"),
            (3802, "jsonb", "object"),
            (2950, "uuid", "keyword"),
            (17, "bytea", "keyword"),
            (1083, "time", "keyword"),
            (1186, "interval", "keyword"),
            (869, "inet", "keyword"),
            (790, "money", "keyword"),
            (3904, "int4range", "keyword"),
            // Arrays: their element's field.
            (1007, "_int4", "integer"),
            (1231, "_numeric", "double"),
            (1185, "_timestamptz", "date"),
            (1009, "_text", "text"),
            (3807, "_jsonb", "object"),
            (2951, "_uuid", "keyword"),
            (1020, "_box", "keyword"),
            // Types of the database.
            (16_500, "citext", "text"),
            (16_501, "_citext", "text"),
            (16_502, "mood", "object"),
            (16_503, "djson", "object"),
            (16_504, "_dnum", "object"),
        ];
        for (oid, name, expected) in cases {
            let p = field_kind(&column("c", oid, name)).property();
            assert_eq!(p["type"], expected, "{name} ({oid}): {p}");
        }
        let p = field_kind(&column("c", 1184, "timestamptz")).property();
        assert_eq!(p["format"], "strict_date_optional_time");
        assert_eq!(p["ignore_malformed"], true);
        let p = field_kind(&column("c", 1700, "numeric")).property();
        assert_eq!(p["ignore_malformed"], true);
        let p = field_kind(&column("c", 3802, "jsonb")).property();
        assert_eq!(p["enabled"], false);
        let p = field_kind(&column("c", 25, "text")).property();
        assert_eq!(p["fields"]["keyword"]["type"], "keyword");
    }

    #[test]
    fn whole_mapping_and_managed_check() {
        let schema = TableSchema {
            database: "db".into(),
            oid: 1,
            name: TableName::new("public", "t"),
            columns: vec![
                column("id", 23, "int4"),
                column("j", 114, "json"),
                column("a.b", 25, "text"),
            ],
            replica_identity: ReplicaIdentity::Default,
        };
        let m = mappings(&schema);
        assert_eq!(m["dynamic"], false);
        assert_eq!(m["_meta"][META_KEY]["table"], "public.t");
        assert_eq!(m["properties"]["id"]["type"], "integer");
        assert_eq!(m["properties"].as_object().unwrap().len(), 2, "{m}");
        let answer = json!({"idx": {"mappings": m}});
        let mut names = managed_properties(&answer).unwrap();
        names.sort();
        assert_eq!(names, ["id", "j"]);
        let foreign = json!({"idx": {"mappings": {"properties": {"id": {"type": "long"}}}}});
        assert_eq!(managed_properties(&foreign), None);
        let mixed = json!({"a": {"mappings": m}, "b": {"mappings": {}}});
        assert_eq!(managed_properties(&mixed), None);
    }
}

//! Resolving any type OID (domains, enums, user-defined arrays, extension
//! types) to a [`ValueType`] with the help of `pg_type`.

use std::collections::HashMap;

use sqlx::Row as _;

use super::kind::{ScalarKind, ValueType};

/// The `pg_type` facts [`resolve`] needs about one type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgTypeRow {
    /// `pg_type.oid`.
    pub oid: u32,
    /// `pg_type.typname` (unqualified, e.g. `int4`, `_text`, `mood`).
    pub name: String,
    /// `pg_type.typtype`: `b` base, `c` composite, `d` domain, `e` enum,
    /// `p` pseudo, `r` range, `m` multirange.
    pub typtype: u8,
    /// `pg_type.typbasetype`: the base type of a domain, `0` otherwise.
    pub basetype: u32,
    /// The element type when this is a true array type (`typelem <> 0 AND
    /// typlen = -1`, as PostgreSQL's `get_element_type` decides), `0`
    /// otherwise: fixed-length types such as `name` or `point` also have a
    /// `typelem`, but their text is not array syntax.
    pub elem: u32,
    /// `pg_type.typdelim`: the delimiter between elements of an array of
    /// this type.
    pub delimiter: u8,
    /// `pg_type.typcategory` (`S` string, `N` numeric, `A` array, `U`
    /// user-defined, …).
    pub category: u8,
}

/// `int2vector` and `oidvector` are arrays to the catalog, but their text
/// output is space-separated numbers, not array syntax: carried as text.
const VECTOR_TYPES: [u32; 2] = [22, 30];

/// How deep domain and array chains are followed before giving up (they
/// cannot be cyclic in a real catalog; this guards against a bad lookup).
const MAX_CHAIN: usize = 32;

const OTHER: ValueType = ValueType::scalar(ScalarKind::Other);

/// Resolves `type_oid` to the [`ValueType`] its text is parsed with.
///
/// * built-in types come from [`ValueType::builtin`] without a lookup;
/// * a domain resolves to its base type (recursively);
/// * an array resolves to its element type, with the element type's
///   delimiter (an array of a domain is an array of the domain's base);
/// * any other base type of string category `S` (such as `citext`) is
///   [`ScalarKind::Text`];
/// * enums, composite types, ranges, other extension types and unknown
///   OIDs are [`ScalarKind::Other`].
///
/// Pure: `lookup` supplies the `pg_type` rows (see [`load_value_types`]).
pub fn resolve(type_oid: u32, lookup: &dyn Fn(u32) -> Option<PgTypeRow>) -> ValueType {
    resolve_at(type_oid, lookup, 0)
}

fn resolve_at(oid: u32, lookup: &dyn Fn(u32) -> Option<PgTypeRow>, depth: usize) -> ValueType {
    if let Some(known) = ValueType::builtin(oid) {
        return known;
    }
    if VECTOR_TYPES.contains(&oid) || depth >= MAX_CHAIN {
        return OTHER;
    }
    let Some(row) = lookup(oid) else {
        return OTHER;
    };
    if row.typtype == b'd' && row.basetype != 0 {
        return resolve_at(row.basetype, lookup, depth + 1);
    }
    if row.elem != 0 {
        let elem = resolve_at(row.elem, lookup, depth + 1);
        return ValueType {
            // An element that is itself an array (an array of a domain
            // over an array type) is carried as its text.
            scalar: if elem.array {
                ScalarKind::Other
            } else {
                elem.scalar
            },
            array: true,
            delimiter: elem.delimiter,
        };
    }
    let scalar = if row.typtype == b'b' && row.category == b'S' {
        ScalarKind::Text
    } else {
        ScalarKind::Other
    };
    ValueType {
        scalar,
        array: false,
        delimiter: row.delimiter,
    }
}

/// The catalog query behind [`load_value_types`]: the requested types and,
/// recursively, the base types of domains and the element types of arrays.
const TYPE_QUERY: &str = "\
WITH RECURSIVE wanted(oid) AS (
    SELECT w::pg_catalog.oid FROM pg_catalog.unnest($1::pg_catalog.int8[]) AS w
  UNION
    SELECT n.oid
    FROM pg_catalog.pg_type t
    JOIN wanted ON t.oid = wanted.oid
    CROSS JOIN LATERAL (VALUES (t.typbasetype), (t.typelem)) AS n(oid)
    WHERE n.oid <> 0
)
SELECT t.oid::pg_catalog.int8 AS oid,
       t.typname::pg_catalog.text AS name,
       pg_catalog.ascii(t.typtype::pg_catalog.text) AS typtype,
       t.typbasetype::pg_catalog.int8 AS basetype,
       (CASE WHEN t.typelem <> 0 AND t.typlen = -1 THEN t.typelem ELSE 0 END)::pg_catalog.int8 AS elem,
       pg_catalog.ascii(t.typdelim::pg_catalog.text) AS delimiter,
       pg_catalog.ascii(t.typcategory::pg_catalog.text) AS category
FROM pg_catalog.pg_type t
JOIN wanted ON t.oid = wanted.oid";

/// Looks up `oids` in `pg_type` with one query (following domain base types
/// and array element types recursively) and resolves each with
/// [`resolve`]. The map holds, for every requested OID that exists, its
/// `typname` and [`ValueType`]; OIDs that do not exist are left out.
pub async fn load_value_types(
    conn: &mut sqlx::PgConnection,
    oids: &[u32],
) -> Result<HashMap<u32, (String, ValueType)>, sqlx::Error> {
    let wanted: Vec<i64> = oids.iter().map(|&o| i64::from(o)).collect();
    let rows = sqlx::query(TYPE_QUERY)
        .bind(wanted)
        .fetch_all(&mut *conn)
        .await?;
    let mut catalog = HashMap::with_capacity(rows.len());
    for row in rows {
        let type_row = decode_row(&row)?;
        catalog.insert(type_row.oid, type_row);
    }
    let lookup = |oid: u32| catalog.get(&oid).cloned();
    Ok(oids
        .iter()
        .filter_map(|&oid| {
            let row = catalog.get(&oid)?;
            Some((oid, (row.name.clone(), resolve(oid, &lookup))))
        })
        .collect())
}

fn decode_row(row: &sqlx::postgres::PgRow) -> Result<PgTypeRow, sqlx::Error> {
    let oid = |name: &str| -> Result<u32, sqlx::Error> {
        let v: i64 = row.try_get(name)?;
        u32::try_from(v).map_err(|e| sqlx::Error::ColumnDecode {
            index: name.to_owned(),
            source: Box::new(e),
        })
    };
    let byte = |name: &str| -> Result<u8, sqlx::Error> {
        let v: i32 = row.try_get(name)?;
        u8::try_from(v).map_err(|e| sqlx::Error::ColumnDecode {
            index: name.to_owned(),
            source: Box::new(e),
        })
    };
    Ok(PgTypeRow {
        oid: oid("oid")?,
        name: row.try_get("name")?,
        typtype: byte("typtype")?,
        basetype: oid("basetype")?,
        elem: oid("elem")?,
        delimiter: byte("delimiter")?,
        category: byte("category")?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn row(oid: u32, name: &str, typtype: u8, basetype: u32, elem: u32, category: u8) -> PgTypeRow {
        PgTypeRow {
            oid,
            name: name.to_owned(),
            typtype,
            basetype,
            elem,
            delimiter: b',',
            category,
        }
    }

    /// A small fake catalog with user-defined types.
    fn catalog(oid: u32) -> Option<PgTypeRow> {
        Some(match oid {
            // domain dnum over numeric, and its array
            20000 => row(20000, "dnum", b'd', 1700, 0, b'N'),
            20001 => row(20001, "_dnum", b'b', 0, 20000, b'A'),
            // enum mood and its array
            20010 => row(20010, "mood", b'e', 0, 0, b'E'),
            20011 => row(20011, "_mood", b'b', 0, 20010, b'A'),
            // domain over a domain over timestamptz
            20020 => row(20020, "d1", b'd', 20021, 0, b'D'),
            20021 => row(20021, "d2", b'd', 1184, 0, b'D'),
            // citext-like extension type and its array
            20030 => row(20030, "citext", b'b', 0, 0, b'S'),
            20031 => row(20031, "_citext", b'b', 0, 20030, b'A'),
            // domain over int4[]
            20040 => row(20040, "darr", b'd', 1007, 0, b'A'),
            // array of that domain
            20041 => row(20041, "_darr", b'b', 0, 20040, b'A'),
            // domain over box, and its array (delimiter ';')
            20050 => PgTypeRow {
                delimiter: b';',
                ..row(20050, "dbox", b'd', 603, 0, b'G')
            },
            20051 => row(20051, "_dbox", b'b', 0, 20050, b'A'),
            // composite type
            20060 => row(20060, "pair", b'c', 0, 0, b'C'),
            // cyclic domain (cannot happen in a real catalog)
            20070 => row(20070, "loop", b'd', 20070, 0, b'U'),
            // an extension base type of a non-string category
            20080 => row(20080, "hstore", b'b', 0, 0, b'U'),
            // the catalog's int2vector row: an array to the catalog
            22 => row(22, "int2vector", b'b', 0, 21, b'A'),
            1006 => row(1006, "_int2vector", b'b', 0, 22, b'A'),
            _ => return None,
        })
    }

    fn r(oid: u32) -> ValueType {
        resolve(oid, &catalog)
    }

    #[test]
    fn builtins_need_no_lookup() {
        let none = |_: u32| None;
        assert_eq!(resolve(1700, &none), ValueType::scalar(ScalarKind::Numeric));
        assert_eq!(
            resolve(1185, &none),
            ValueType::array_of(ScalarKind::TimestampTz)
        );
        assert_eq!(resolve(99999, &none), OTHER);
    }

    #[test]
    fn domains_resolve_to_their_base() {
        assert_eq!(r(20000), ValueType::scalar(ScalarKind::Numeric));
        assert_eq!(r(20001), ValueType::array_of(ScalarKind::Numeric));
        assert_eq!(r(20020), ValueType::scalar(ScalarKind::TimestampTz));
        assert_eq!(r(20040), ValueType::array_of(ScalarKind::Int4));
        assert_eq!(
            r(20051),
            ValueType {
                scalar: ScalarKind::Other,
                array: true,
                delimiter: b';'
            }
        );
    }

    #[test]
    fn enums_strings_and_the_rest() {
        assert_eq!(r(20010), OTHER);
        assert_eq!(r(20011), ValueType::array_of(ScalarKind::Other));
        assert_eq!(r(20030), ValueType::scalar(ScalarKind::Text));
        assert_eq!(r(20031), ValueType::array_of(ScalarKind::Text));
        assert_eq!(r(20060), OTHER);
        assert_eq!(r(20070), OTHER);
        assert_eq!(r(20080), OTHER);
        assert_eq!(r(20041), ValueType::array_of(ScalarKind::Other));
    }

    #[test]
    fn vectors_are_text() {
        assert_eq!(r(22), OTHER);
        assert_eq!(r(1006), ValueType::array_of(ScalarKind::Other));
    }
}

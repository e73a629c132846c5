//! Rows from the bytes of a `COPY` read, in either format: lines of text
//! output split by [`super::copy_text`] and parsed by each column's
//! [`ValueType`], or binary tuples cut by [`super::copy_binary`] and
//! decoded by each column's [`BinaryType`]. Both give the values the
//! replication stream gives.

use std::borrow::Cow;

use cdc_core::{RowsBuilder, Value};

use super::copy_binary::{CopyBinaryError, FieldRange, TupleAssembler};
use super::copy_text::{split_line, CopyField, LineAssembler};
use super::format::ReadFormat;
use crate::catalog::RelationInfo;
use crate::error::PgError;
use crate::value::{BinaryType, ValueError, ValueType};

/// Turns the chunks of one `COPY` output into rows.
pub(crate) enum RowDecoder<'t> {
    /// Text format.
    Text(LineAssembler, LineParser<'t>),
    /// Binary format.
    Binary(TupleAssembler, TupleParser<'t>),
}

impl<'t> RowDecoder<'t> {
    /// A decoder of `table`'s columns in `format`, as sent by the server
    /// of `server_version_num`. Errors when the table has no parser for
    /// some column, or (binary) no binary decoder, or (binary) the server's
    /// version is unknown.
    pub(crate) fn new(
        table: &'t RelationInfo,
        format: ReadFormat,
        server_version_num: Option<u32>,
    ) -> Result<Self, PgError> {
        let schema = &table.schema;
        if table.types.len() != schema.columns.len() {
            return Err(PgError::Protocol(format!(
                "{}: {} parsers for {} columns",
                schema.name,
                table.types.len(),
                schema.columns.len()
            )));
        }
        Ok(match format {
            ReadFormat::Text => RowDecoder::Text(LineAssembler::new(), LineParser::new(table)),
            ReadFormat::Binary => {
                let version = server_version_num.ok_or_else(|| {
                    PgError::Protocol(format!(
                        "{}: binary COPY needs the server's version, which it did not report",
                        schema.name
                    ))
                })?;
                RowDecoder::Binary(TupleAssembler::new(), TupleParser::new(table, version)?)
            }
        })
    }

    /// Decodes the rows `chunk` completes onto `rows` (whole rows only:
    /// a row cut by the chunk's end is completed by the next chunk).
    pub(crate) fn push(&mut self, chunk: &[u8], rows: &mut RowsBuilder) -> Result<(), PgError> {
        match self {
            RowDecoder::Text(lines, parser) => lines.push(chunk, |line| parser.parse(line, rows)),
            RowDecoder::Binary(tuples, parser) => tuples
                .push(chunk, |bytes, fields| parser.parse(bytes, fields, rows))
                .map_err(|f| f.into_pg(parser.table)),
        }
    }

    /// Ends the output: an error when it was cut short.
    pub(crate) fn finish(&self) -> Result<(), PgError> {
        let (table, result) = match self {
            RowDecoder::Text(lines, parser) => (
                parser.table,
                lines.finish().map_err(|e| e.to_string()),
            ),
            RowDecoder::Binary(tuples, parser) => (
                parser.table,
                tuples.finish().map_err(|e| e.to_string()),
            ),
        };
        result.map_err(|e| PgError::Protocol(format!("COPY output of {}: {e}", table.schema.name)))
    }
}

/// Decodes binary tuples of a table's columns into rows.
pub(crate) struct TupleParser<'t> {
    table: &'t RelationInfo,
    types: Vec<BinaryType>,
}

/// Why a binary tuple did not become a row.
enum Failure {
    Stream(CopyBinaryError),
    Width(usize),
    Value(usize, ValueError),
}

impl From<CopyBinaryError> for Failure {
    fn from(e: CopyBinaryError) -> Self {
        Failure::Stream(e)
    }
}

impl Failure {
    fn into_pg(self, table: &RelationInfo) -> PgError {
        let schema = &table.schema;
        match self {
            Failure::Stream(e) => PgError::Protocol(format!("COPY output of {}: {e}", schema.name)),
            Failure::Width(found) => shape_error(table, found),
            Failure::Value(column, source) => PgError::Value {
                table: schema.name.to_string(),
                column: schema
                    .columns
                    .get(column)
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
                source,
            },
        }
    }
}

impl<'t> TupleParser<'t> {
    fn new(table: &'t RelationInfo, server_version_num: u32) -> Result<Self, PgError> {
        let types = table
            .schema
            .columns
            .iter()
            .map(|c| {
                BinaryType::for_server(c.type_oid, server_version_num).ok_or_else(|| {
                    PgError::Protocol(format!(
                        "{}: column {} ({}) has no binary decoder",
                        table.schema.name, c.name, c.type_name
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { table, types })
    }

    /// Decodes one tuple onto `out` as a row; on error `out` is as before.
    fn parse(
        &self,
        bytes: &[u8],
        fields: &[FieldRange],
        out: &mut RowsBuilder,
    ) -> Result<(), Failure> {
        if fields.len() != self.types.len() {
            return Err(Failure::Width(fields.len()));
        }
        for (i, (field, ty)) in fields.iter().zip(&self.types).enumerate() {
            let decoded = match field {
                None => {
                    out.push(Value::Null);
                    Ok(())
                }
                Some(range) => ty.decode_into(bytes.get(range.clone()).unwrap_or_default(), out),
            };
            if let Err(e) = decoded {
                out.discard_row();
                return Err(Failure::Value(i, e));
            }
        }
        out.end_row();
        Ok(())
    }
}

fn shape_error(table: &RelationInfo, found: usize) -> PgError {
    let schema = &table.schema;
    PgError::Protocol(format!(
        "COPY output of {}: a row has {found} values, the table has {} columns",
        schema.name,
        schema.columns.len()
    ))
}

/// Turns lines of COPY text output into rows, reusing its field buffer.
pub(crate) struct LineParser<'t> {
    table: &'t RelationInfo,
    /// Always empty between lines; kept for its allocation.
    fields: Vec<CopyField<'static>>,
}

impl<'t> LineParser<'t> {
    fn new(table: &'t RelationInfo) -> Self {
        Self {
            table,
            fields: Vec::with_capacity(table.schema.columns.len()),
        }
    }

    /// Parses one line onto `out` as a row; on error `out` is as before.
    fn parse(&mut self, line: &[u8], out: &mut RowsBuilder) -> Result<(), PgError> {
        let schema = &self.table.schema;
        let columns = schema.columns.len();
        if columns == 0 {
            // A row of a table without columns is an empty line.
            return if line.is_empty() {
                out.end_row();
                Ok(())
            } else {
                Err(shape_error(self.table, 1))
            };
        }
        let mut fields = recycle(std::mem::take(&mut self.fields));
        split_line(line, &mut fields)
            .map_err(|e| PgError::Protocol(format!("COPY output of {}: {e}", schema.name)))?;
        if fields.len() != columns {
            return Err(shape_error(self.table, fields.len()));
        }
        for ((field, column), ty) in fields.drain(..).zip(&schema.columns).zip(&self.table.types) {
            match parse_field(field, ty) {
                Ok(value) => out.push(value),
                Err(source) => {
                    out.discard_row();
                    return Err(PgError::Value {
                        table: schema.name.to_string(),
                        column: column.name.clone(),
                        source,
                    });
                }
            }
        }
        self.fields = recycle(fields);
        out.end_row();
        Ok(())
    }
}

fn parse_field(field: CopyField<'_>, ty: &ValueType) -> Result<Value, ValueError> {
    match field {
        None => Ok(Value::Null),
        Some(bytes) => ty.parse(&bytes),
    }
}

/// An empty vector of fields of any lifetime, reusing `v`'s allocation
/// (the element types have the same layout, so collecting in place keeps
/// the buffer).
fn recycle<'a, 'b>(mut v: Vec<CopyField<'a>>) -> Vec<CopyField<'b>> {
    v.clear();
    v.into_iter().map(|_| None::<Cow<'b, [u8]>>).collect()
}

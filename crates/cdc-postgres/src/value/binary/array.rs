//! `array_send`'s format to nested [`Value::Array`]s: the number of
//! dimensions, a has-NULLs flag, the element type's OID, per dimension its
//! length and lower bound, then every element in row-major order as a
//! 32-bit length (`-1` for NULL) and its bytes. Lower bounds are dropped,
//! as `to_jsonb` drops them; an array with no dimensions is `[]`.

use cdc_core::Value;

use super::{BinaryScalar, Reason};

/// PostgreSQL's `MAXDIM`.
const MAX_DIMS: usize = 6;

/// A reader over the bytes of one array.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Reason> {
        let end = self.at.checked_add(n).ok_or("array too long")?;
        let out = self.bytes.get(self.at..end).ok_or("array data cut short")?;
        self.at = end;
        Ok(out)
    }

    fn i32(&mut self) -> Result<i32, Reason> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes(
            b.try_into().map_err(|_| "array data cut short")?,
        ))
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }
}

/// Decodes an array whose elements are `scalar`s.
pub(super) fn decode_array(bytes: &[u8], scalar: BinaryScalar) -> Result<Value, Reason> {
    let mut c = Cursor { bytes, at: 0 };
    let ndim = usize::try_from(c.i32()?).map_err(|_| "negative array dimensions")?;
    if ndim > MAX_DIMS {
        return Err("more than 6 array dimensions");
    }
    let _has_nulls = c.i32()?;
    let element_oid =
        u32::from_be_bytes(c.take(4)?.try_into().map_err(|_| "array data cut short")?);
    if !scalar.holds(element_oid) {
        return Err("array of another element type");
    }
    let mut dims = [0usize; MAX_DIMS];
    let mut total = 1usize;
    for dim in dims.iter_mut().take(ndim) {
        *dim = usize::try_from(c.i32()?).map_err(|_| "negative array length")?;
        let _lower_bound = c.i32()?;
        total = total.checked_mul(*dim).ok_or("array too long")?;
    }
    if ndim == 0 {
        return if c.remaining() == 0 {
            Ok(Value::Array(Box::new([])))
        } else {
            Err("bytes after an empty array")
        };
    }
    // Every element takes at least its 4-byte length: a count the bytes
    // cannot hold is refused before anything is allocated for it.
    if total > c.remaining() / 4 {
        return Err("array data cut short");
    }
    let value = nest(&mut c, dims.get(..ndim).unwrap_or_default(), scalar)?;
    if c.remaining() != 0 {
        return Err("bytes after the last array element");
    }
    Ok(value)
}

/// Reads the elements of the dimensions `dims` (outermost first).
fn nest(c: &mut Cursor<'_>, dims: &[usize], scalar: BinaryScalar) -> Result<Value, Reason> {
    let Some((&len, inner)) = dims.split_first() else {
        return element(c, scalar);
    };
    let mut items = Vec::with_capacity(len);
    for _ in 0..len {
        items.push(nest(c, inner, scalar)?);
    }
    Ok(Value::Array(items.into_boxed_slice()))
}

fn element(c: &mut Cursor<'_>, scalar: BinaryScalar) -> Result<Value, Reason> {
    let len = c.i32()?;
    if len == -1 {
        return Ok(Value::Null);
    }
    let len = usize::try_from(len).map_err(|_| "negative array element length")?;
    scalar.decode(c.take(len)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// `array_send` of int4 elements with dimensions `dims`.
    fn int4_array(dims: &[(i32, i32)], elements: &[Option<i32>]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(dims.len() as i32).to_be_bytes());
        out.extend_from_slice(&i32::from(elements.contains(&None)).to_be_bytes());
        out.extend_from_slice(&23u32.to_be_bytes());
        for (len, lower) in dims {
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&lower.to_be_bytes());
        }
        for e in elements {
            match e {
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    out.extend_from_slice(&4i32.to_be_bytes());
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
        out
    }

    fn arr(items: Vec<Value>) -> Value {
        Value::Array(items.into_boxed_slice())
    }

    #[test]
    fn dimensions_nest_and_bounds_are_dropped() {
        let one = int4_array(&[(2, 0)], &[Some(1), None]);
        assert_eq!(
            decode_array(&one, BinaryScalar::Int4).unwrap(),
            arr(vec![Value::Int4(1), Value::Null])
        );
        let two = int4_array(&[(2, 1), (3, 1)], &[1, 2, 3, 4, 5, 6].map(Some));
        let row = |a, b, c| arr(vec![Value::Int4(a), Value::Int4(b), Value::Int4(c)]);
        assert_eq!(
            decode_array(&two, BinaryScalar::Int4).unwrap(),
            arr(vec![row(1, 2, 3), row(4, 5, 6)])
        );
        let empty = int4_array(&[], &[]);
        assert_eq!(
            decode_array(&empty, BinaryScalar::Int4).unwrap(),
            arr(vec![])
        );
    }

    #[test]
    fn malformed_arrays_are_errors() {
        let ok = int4_array(&[(2, 1)], &[Some(1), Some(2)]);
        assert!(decode_array(&ok[..ok.len() - 1], BinaryScalar::Int4).is_err());
        let mut extra = ok.clone();
        extra.push(0);
        assert!(decode_array(&extra, BinaryScalar::Int4).is_err());
        assert_eq!(
            decode_array(&ok, BinaryScalar::Int8),
            Err("array of another element type")
        );
        // A huge claimed length is refused before allocating.
        let huge = int4_array(&[(i32::MAX, 1), (i32::MAX, 1)], &[]);
        assert_eq!(
            decode_array(&huge, BinaryScalar::Int4),
            Err("array data cut short")
        );
        let deep = int4_array(&[(1, 1); 7], &[Some(1)]);
        assert_eq!(
            decode_array(&deep, BinaryScalar::Int4),
            Err("more than 6 array dimensions")
        );
    }
}

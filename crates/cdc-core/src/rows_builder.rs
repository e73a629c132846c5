//! [`RowsBuilder`]: rows built value by value, handed out in blocks that
//! share their memory.

use std::sync::Arc;

use crate::text::Text;
use crate::value::{Row, Value};

/// Which text-like [`Value`] variant a text becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TextKind {
    /// [`Value::Numeric`].
    Numeric,
    /// [`Value::Text`].
    Text,
    /// [`Value::Json`].
    Json,
    /// [`Value::Date`].
    Date,
    /// [`Value::Time`].
    Time,
    /// [`Value::TimeTz`].
    TimeTz,
    /// [`Value::Timestamp`].
    Timestamp,
    /// [`Value::TimestampTz`].
    TimestampTz,
    /// [`Value::Interval`].
    Interval,
    /// [`Value::Other`].
    Other,
}

impl TextKind {
    /// The value of this kind holding `text`.
    pub fn value(self, text: Text) -> Value {
        match self {
            TextKind::Numeric => Value::Numeric(text),
            TextKind::Text => Value::Text(text),
            TextKind::Json => Value::Json(text),
            TextKind::Date => Value::Date(text),
            TextKind::Time => Value::Time(text),
            TextKind::TimeTz => Value::TimeTz(text),
            TextKind::Timestamp => Value::Timestamp(text),
            TextKind::TimestampTz => Value::TimestampTz(text),
            TextKind::Interval => Value::Interval(text),
            TextKind::Other => Value::Other(text),
        }
    }
}

/// A text value of the row being built: its place among the values and its
/// bytes in the builder's buffer.
#[derive(Debug)]
struct PendingText {
    /// The index of its value (a placeholder until the rows are handed out).
    index: usize,
    kind: TextKind,
    /// `from..to` of the builder's buffer.
    from: usize,
    to: usize,
}

/// Builds rows one value at a time and hands them out in blocks that share
/// their memory: [`finish_into`](Self::finish_into) makes one allocation
/// for the values of a block of rows and one for their texts, where rows
/// made one by one make one per row and one per text. For a reader
/// that decodes many rows and hands them to another thread, that is most
/// of the cost of a row's memory (the memory is freed on the other thread).
/// The builder keeps its own buffers from batch to batch.
///
/// The memory of a block is freed when the last of its rows is dropped:
/// keeping one row (or one of its texts) keeps the block's.
///
/// ```
/// use cdc_core::{RowsBuilder, TextKind, Value};
///
/// let mut rows = RowsBuilder::new();
/// rows.push(Value::Int4(1));
/// rows.push_text(TextKind::Text, "one");
/// rows.end_row();
/// rows.push(Value::Int4(2));
/// rows.push_text_with(TextKind::Text, |buf| {
///     buf.push_str("two");
///     Ok::<_, ()>(())
/// })
/// .unwrap();
/// rows.end_row();
///
/// let mut out = Vec::new();
/// rows.finish_into(&mut out);
/// assert_eq!(out[1].values(), &[Value::Int4(2), Value::Text("two".into())]);
/// ```
#[derive(Debug, Default)]
pub struct RowsBuilder {
    /// The values, a text's a placeholder until the rows are handed out.
    values: Vec<Value>,
    /// The text values among `values`, in order.
    texts: Vec<PendingText>,
    /// The end in `values` of each complete row.
    row_ends: Vec<usize>,
    /// The bytes of the texts, one after the other.
    text: String,
}

impl RowsBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` to the row being built.
    pub fn push(&mut self, value: Value) {
        self.values.push(value);
    }

    /// Adds a value of `kind` holding `text` to the row being built.
    pub fn push_text(&mut self, kind: TextKind, text: &str) {
        let from = self.text.len();
        self.text.push_str(text);
        self.pushed_text(kind, from);
    }

    /// Adds a value of `kind` whose text `write` writes. When `write`
    /// fails, what it wrote is taken back and no value is added.
    pub fn push_text_with<E>(
        &mut self,
        kind: TextKind,
        write: impl FnOnce(&mut TextWriter<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let from = self.text.len();
        match write(&mut TextWriter(&mut self.text)) {
            Ok(()) => {
                self.pushed_text(kind, from);
                Ok(())
            }
            Err(e) => {
                self.text.truncate(from);
                Err(e)
            }
        }
    }

    /// Records the text written from `from` to the buffer's end as the next
    /// value.
    fn pushed_text(&mut self, kind: TextKind, from: usize) {
        self.texts.push(PendingText {
            index: self.values.len(),
            kind,
            from,
            to: self.text.len(),
        });
        self.values.push(Value::Null);
    }

    /// Ends the row being built (a row of the values pushed since the last
    /// `end_row` or [`discard_row`](Self::discard_row)).
    pub fn end_row(&mut self) {
        self.row_ends.push(self.values.len());
    }

    /// Drops the values pushed since the row before ended.
    pub fn discard_row(&mut self) {
        let start = self.row_ends.last().copied().unwrap_or(0);
        let kept = self.texts.partition_point(|t| t.index < start);
        if let Some(first) = self.texts.get(kept) {
            self.text.truncate(first.from);
        }
        self.texts.truncate(kept);
        self.values.truncate(start);
    }

    /// How many complete rows are waiting to be handed out.
    pub fn rows(&self) -> usize {
        self.row_ends.len()
    }

    /// Moves every complete row onto `rows`, in order; a row being built
    /// stays. The rows moved share their memory in blocks (of up to 32 KiB
    /// of values and 32 KiB of text): one allocation for a block's values
    /// and one for its texts.
    pub fn finish_into(&mut self, rows: &mut Vec<Row>) {
        let Some(&complete) = self.row_ends.last() else {
            return;
        };
        let done = self.texts.partition_point(|t| t.index < complete);
        let text_end = self.texts.get(done).map_or(self.text.len(), |t| t.from);
        let blocks = self.blocks(done);
        // Fill in the texts, block by block, in the builder's own vector.
        let mut texts = self.texts.drain(..done);
        for block in &blocks {
            let buf: Option<Arc<str>> = self
                .text
                .get(block.text.clone())
                .filter(|t| !t.is_empty())
                .map(Arc::from);
            for t in texts.by_ref().take(block.texts) {
                if let Some(value) = self.values.get_mut(t.index) {
                    let (from, to) = (t.from - block.text.start, t.to - block.text.start);
                    *value = t.kind.value(text_at(buf.as_ref(), from, to));
                }
            }
        }
        drop(texts);
        // Then move each block's values into its allocation.
        rows.reserve(self.row_ends.len());
        let mut values = self.values.drain(..complete);
        let mut row_ends = self.row_ends.iter();
        for block in &blocks {
            let all: Arc<[Value]> = values.by_ref().take(block.values.len()).collect();
            let mut start = 0;
            for &end in row_ends.by_ref().take(block.rows) {
                let end = end - block.values.start;
                rows.push(Row::shared(&all, start, end).unwrap_or_default());
                start = end;
            }
        }
        drop(values);
        self.row_ends.clear();
        // The row being built keeps its values and texts, now at the start.
        self.text.drain(..text_end);
        for t in &mut self.texts {
            t.index -= complete;
            t.from -= text_end;
            t.to -= text_end;
        }
    }

    /// Cuts the complete rows (whose texts are the first `done`) into
    /// blocks of at most [`BLOCK_VALUES`] values and [`BLOCK_TEXT`] bytes of
    /// text (or one row, when a row is larger).
    fn blocks(&self, done: usize) -> Vec<Block> {
        let mut blocks = Vec::new();
        let mut block = Block::default();
        let mut next_text = 0;
        let mut text_pos = 0;
        for &end in &self.row_ends {
            let first_text = next_text;
            while self.texts.get(next_text).is_some_and(|t| t.index < end) && next_text < done {
                next_text += 1;
            }
            if let Some(last) = next_text.checked_sub(1).and_then(|i| self.texts.get(i)) {
                text_pos = last.to;
            }
            block.rows += 1;
            block.texts += next_text - first_text;
            block.values.end = end;
            block.text.end = text_pos;
            if block.values.len() >= BLOCK_VALUES || block.text.len() >= BLOCK_TEXT {
                let next = Block {
                    values: end..end,
                    text: text_pos..text_pos,
                    ..Block::default()
                };
                blocks.push(std::mem::replace(&mut block, next));
            }
        }
        if block.rows > 0 {
            blocks.push(block);
        }
        blocks
    }
}

/// The most values one block of rows shares (32 KiB of them).
const BLOCK_VALUES: usize = 1024;
/// The most text one block of rows shares, in bytes.
const BLOCK_TEXT: usize = 32 * 1024;

/// Rows handed out together, sharing one allocation for their values and
/// one for their texts. Blocks stay small: a large allocation is one
/// glibc's malloc may map and unmap (or trim) each time, at the cost of a
/// page fault per page.
#[derive(Debug, Default)]
struct Block {
    rows: usize,
    /// Its values among the builder's.
    values: std::ops::Range<usize>,
    /// How many of the builder's texts are its.
    texts: usize,
    /// Its texts' bytes in the builder's buffer.
    text: std::ops::Range<usize>,
}

/// Where [`RowsBuilder::push_text_with`] writes a value's text: it can
/// only add to it.
#[derive(Debug)]
pub struct TextWriter<'a>(&'a mut String);

impl TextWriter<'_> {
    /// Appends `s`.
    pub fn push_str(&mut self, s: &str) {
        self.0.push_str(s);
    }

    /// Appends `c`.
    pub fn push(&mut self, c: char) {
        self.0.push(c);
    }
}

impl std::fmt::Write for TextWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.push_str(s);
        Ok(())
    }
}

/// The text at `from..to` of `buf` (a copy when the range cannot be held
/// as a slice of it).
fn text_at(buf: Option<&Arc<str>>, from: usize, to: usize) -> Text {
    let Some(buf) = buf else {
        return Text::default();
    };
    Text::slice(buf, from, to).unwrap_or_else(|| Text::from(buf.get(from..to).unwrap_or_default()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn rows_come_out_in_order_with_their_values() {
        let mut b = RowsBuilder::new();
        for i in 0..3 {
            b.push(Value::Int4(i));
            b.push_text(TextKind::Text, &format!("row {i}"));
            b.push(Value::Null);
            b.push_text(TextKind::Json, "{}");
            b.end_row();
        }
        assert_eq!(b.rows(), 3);
        let mut out = Vec::new();
        b.finish_into(&mut out);
        assert_eq!(b.rows(), 0);
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[2].values(),
            &[
                Value::Int4(2),
                text("row 2"),
                Value::Null,
                Value::Json("{}".into())
            ]
        );
    }

    #[test]
    fn a_row_being_built_stays_and_keeps_its_texts() {
        let mut b = RowsBuilder::new();
        b.push_text(TextKind::Text, "first");
        b.end_row();
        b.push(Value::Int8(9));
        b.push_text(TextKind::Date, "2024-01-01");
        let mut out = Vec::new();
        b.finish_into(&mut out);
        assert_eq!(out, vec![Row::new(vec![text("first")])]);
        b.push_text(TextKind::Text, "more");
        b.end_row();
        b.finish_into(&mut out);
        assert_eq!(
            out[1].values(),
            &[
                Value::Int8(9),
                Value::Date("2024-01-01".into()),
                text("more")
            ]
        );
    }

    #[test]
    fn a_discarded_row_leaves_nothing() {
        let mut b = RowsBuilder::new();
        b.push_text(TextKind::Text, "kept");
        b.end_row();
        b.push_text(TextKind::Text, "dropped");
        b.push(Value::Bool(true));
        b.discard_row();
        b.push_text(TextKind::Text, "next");
        b.end_row();
        let mut out = Vec::new();
        b.finish_into(&mut out);
        assert_eq!(
            out,
            vec![Row::new(vec![text("kept")]), Row::new(vec![text("next")])]
        );
    }

    #[test]
    fn a_failed_write_adds_nothing() {
        let mut b = RowsBuilder::new();
        let r = b.push_text_with(TextKind::Text, |buf| {
            buf.push_str("half");
            Err("bad")
        });
        assert_eq!(r, Err("bad"));
        b.push_text(TextKind::Text, "ok");
        b.end_row();
        let mut out = Vec::new();
        b.finish_into(&mut out);
        assert_eq!(out, vec![Row::new(vec![text("ok")])]);
    }

    #[test]
    fn a_written_text_can_be_formatted() {
        use std::fmt::Write;
        let mut b = RowsBuilder::new();
        b.push_text_with(TextKind::Numeric, |w| write!(w, "{}.{}", 12, 5))
            .unwrap();
        b.end_row();
        let mut out = Vec::new();
        b.finish_into(&mut out);
        assert_eq!(out, vec![Row::new(vec![Value::Numeric("12.5".into())])]);
    }

    #[test]
    fn the_rows_of_one_finish_share_one_buffer() {
        let mut b = RowsBuilder::new();
        for s in ["a", "b"] {
            b.push_text(TextKind::Text, s);
            b.end_row();
        }
        let mut out = Vec::new();
        b.finish_into(&mut out);
        let [Value::Text(a)] = out[0].values() else {
            panic!("not a text");
        };
        let [Value::Text(b)] = out[1].values() else {
            panic!("not a text");
        };
        assert!(std::ptr::eq(
            a.as_str().as_ptr().wrapping_add(1),
            b.as_str().as_ptr()
        ));
    }

    #[test]
    fn the_rows_of_one_finish_share_their_values_until_one_is_changed() {
        let mut b = RowsBuilder::new();
        for i in 0..2 {
            b.push(Value::Int8(i));
            b.push_text(TextKind::Text, "t");
            b.end_row();
        }
        let mut out = Vec::new();
        b.finish_into(&mut out);
        let second = out[1].values().as_ptr();
        assert!(std::ptr::eq(
            out[0].values().as_ptr().wrapping_add(2),
            second
        ));
        let copy = out[1].clone();
        out[1].values_mut()[0] = Value::Int8(7);
        assert_eq!(out[1].values(), &[Value::Int8(7), text("t")]);
        assert_eq!(copy.values(), &[Value::Int8(1), text("t")]);
        assert!(std::ptr::eq(copy.values().as_ptr(), second));
        assert_eq!(
            out[0].clone().into_values(),
            vec![Value::Int8(0), text("t")]
        );
        assert_eq!(out[0], Row::new(vec![Value::Int8(0), text("t")]));
    }

    #[test]
    fn many_rows_are_cut_into_blocks_of_bounded_size() {
        let mut b = RowsBuilder::new();
        let big = "x".repeat(BLOCK_TEXT + 1);
        for i in 0..3000 {
            b.push(Value::Int4(i));
            if i == 1500 {
                b.push_text(TextKind::Text, &big);
            } else {
                b.push_text(TextKind::Json, &i.to_string());
            }
            b.push(Value::Null);
            b.end_row();
        }
        b.push_text(TextKind::Text, "being built");
        let mut out = Vec::new();
        b.finish_into(&mut out);
        assert_eq!(out.len(), 3000);
        for (i, row) in (0..).zip(&out) {
            let text = if i == 1500 {
                Value::Text(big.as_str().into())
            } else {
                Value::Json(i.to_string().into())
            };
            assert_eq!(
                row.values(),
                &[Value::Int4(i), text, Value::Null],
                "row {i}"
            );
        }
        // Rows share values within a block and not beyond it.
        let start = |r: &Row| r.values().as_ptr() as usize;
        let mut blocks = 1;
        for pair in out.windows(2) {
            if start(&pair[1]) != start(&pair[0]) + 3 * std::mem::size_of::<Value>() {
                blocks += 1;
            }
        }
        // 9000 values in blocks of at most 1024 (one more for the big row).
        assert!((9..=11).contains(&blocks), "{blocks} blocks");
        b.end_row();
        b.finish_into(&mut out);
        assert_eq!(out[3000].values(), &[text("being built")]);
    }

    #[test]
    fn rows_without_texts_and_empty_rows_work() {
        let mut b = RowsBuilder::new();
        b.end_row();
        b.push(Value::Int2(1));
        b.end_row();
        let mut out = Vec::new();
        b.finish_into(&mut out);
        assert_eq!(out, vec![Row::new(vec![]), Row::new(vec![Value::Int2(1)])]);
        b.finish_into(&mut out);
        assert_eq!(out.len(), 2);
    }
}

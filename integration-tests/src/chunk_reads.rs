//! Reading one chunk with the snapshot reader and collecting its rows,
//! for the tests of the reader itself: on a driver connection
//! (`cdc_postgres::snapshot::read_chunk_from`) or on the readers' own
//! COPY connection (`cdc_postgres::snapshot::ChunkConnection`).

use cdc_core::Row;
use cdc_postgres::catalog::RelationInfo;
use cdc_postgres::snapshot::{read_chunk_from, ChunkBounds, ChunkConnection, ReadFormat};
use cdc_postgres::PgError;
use sqlx::PgConnection;
use tokio::sync::mpsc;

/// The connection a chunk is read on.
pub enum ChunkReader<'a> {
    /// A driver connection (with the pinned session settings).
    Driver(&'a mut PgConnection),
    /// The readers' own COPY connection to this URL.
    Own(&'a str),
}

impl ChunkReader<'_> {
    /// Names the connection in messages.
    pub fn name(&self) -> &'static str {
        match self {
            ChunkReader::Driver(_) => "driver connection",
            ChunkReader::Own(_) => "own COPY connection",
        }
    }
}

/// The rows of `bounds` of `info`'s table read in `format` on a driver
/// connection, in batches of at most `rows_per_batch` (checked, as is the
/// count the reader returns).
pub async fn read_chunk_rows(
    conn: &mut PgConnection,
    info: &RelationInfo,
    bounds: &ChunkBounds,
    format: ReadFormat,
    rows_per_batch: usize,
) -> Vec<Row> {
    read_chunk_rows_on(
        ChunkReader::Driver(conn),
        info,
        bounds,
        format,
        rows_per_batch,
    )
    .await
}

/// [`read_chunk_rows`] on the connection `reader` says.
pub async fn read_chunk_rows_on(
    reader: ChunkReader<'_>,
    info: &RelationInfo,
    bounds: &ChunkBounds,
    format: ReadFormat,
    rows_per_batch: usize,
) -> Vec<Row> {
    let collector = RowCollector::new(rows_per_batch);
    let name = info.schema.name.clone();
    let via = reader.name();
    let n: Result<u64, PgError> = match reader {
        ChunkReader::Driver(conn) => {
            read_chunk_from(
                conn,
                info,
                &name,
                bounds,
                format,
                rows_per_batch,
                collector.tx(),
            )
            .await
        }
        ChunkReader::Own(url) => {
            let mut conn = ChunkConnection::connect(url, "cdc-test/reader")
                .await
                .unwrap_or_else(|e| panic!("connecting the own COPY connection: {e}"));
            let n = conn
                .read_chunk_from(info, &name, bounds, format, rows_per_batch, collector.tx())
                .await;
            conn.close().await;
            n
        }
    };
    let n = n.unwrap_or_else(|e| {
        panic!(
            "reading {bounds:?} of {name} as {format:?} on the {via}: {}",
            cdc_core::error_chain(&e)
        )
    });
    let rows = collector.finish().await;
    assert_eq!(n as usize, rows.len(), "{bounds:?} of {name} ({via})");
    rows
}

/// Collects the batches a chunk read sends: give the read [`RowCollector::tx`],
/// then [`RowCollector::finish`]. Every batch must hold 1 to
/// `rows_per_batch` rows.
pub struct RowCollector {
    tx: mpsc::Sender<Vec<Row>>,
    collect: tokio::task::JoinHandle<Vec<Row>>,
}

impl RowCollector {
    /// A collector of batches of at most `rows_per_batch` rows.
    pub fn new(rows_per_batch: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<Row>>(2);
        let collect = tokio::spawn(async move {
            let mut rows = Vec::new();
            while let Some(batch) = rx.recv().await {
                assert!(!batch.is_empty() && batch.len() <= rows_per_batch);
                rows.extend(batch);
            }
            rows
        });
        Self { tx, collect }
    }

    /// Where the read sends its batches.
    pub fn tx(&self) -> &mpsc::Sender<Vec<Row>> {
        &self.tx
    }

    /// Every row sent, in order.
    pub async fn finish(self) -> Vec<Row> {
        drop(self.tx);
        self.collect.await.expect("the row collector panicked")
    }
}

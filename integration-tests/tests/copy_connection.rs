//! The snapshot readers' own COPY connection
//! (`cdc_postgres::snapshot::ChunkConnection`) against a real PostgreSQL:
//! a server error in the middle of a `COPY` is the read's error, with its
//! SQLSTATE, and the connection reads again afterwards. (That it renders
//! every value as the driver's connection does is `value_types`'; that the
//! engine's snapshots read exactly the table on it is `snapshot`'s.)

use cdc_core::{ErrorClass, TableName};
use cdc_postgres::catalog::RelationInfo;
use cdc_postgres::conn::ConnParams;
use cdc_postgres::snapshot::{describe_table, ChunkBounds, ChunkConnection, ReadFormat};
use integration_tests::chunk_reads::RowCollector;
use integration_tests::TestDb;
use sqlx::{Connection, PgConnection};

const ROWS: usize = 3000;

/// Reads `info`'s table on `conn` in `format`: what the read returned and
/// the rows it sent before that.
async fn read_all(
    conn: &mut ChunkConnection,
    info: &RelationInfo,
    format: ReadFormat,
) -> (Result<u64, cdc_postgres::PgError>, usize) {
    let collector = RowCollector::new(100);
    let bounds = ChunkBounds::Ctid {
        start_block: 0,
        end_block: None,
    };
    let n = conn
        .read_chunk_from(
            info,
            &info.schema.name,
            &bounds,
            format,
            100,
            collector.tx(),
        )
        .await;
    (n, collector.finish().await.len())
}

/// A row filter that fails with `division_by_zero` at row 2000 (of 3000,
/// read in order from a freshly loaded table) stops the read with that
/// error after the rows before it were sent; the same connection then
/// reads the whole table, in both formats.
#[tokio::test]
async fn an_error_midway_through_a_copy_is_the_reads_and_the_connection_reads_again() {
    let db = TestDb::create("copyconn_error").await;
    db.exec(&format!(
        "CREATE TABLE public.t (id int PRIMARY KEY, v text);
         INSERT INTO public.t SELECT g, repeat('v', 40) || g FROM generate_series(1, {ROWS}) g;"
    ))
    .await;
    let opts = ConnParams::parse(db.url()).unwrap().sqlx_options();
    let mut driver = PgConnection::connect_with(&opts).await.unwrap();
    let table = TableName::new("public", "t");
    let info = describe_table(&mut driver, db.name(), &table)
        .await
        .unwrap();
    let _ = driver.close().await;
    let failing = RelationInfo {
        row_filter: Some("(1 / (id - 2000)) IS NOT NULL".into()),
        ..info.clone()
    };

    let mut conn = ChunkConnection::connect(db.url(), "cdc-test/reader")
        .await
        .unwrap();
    for format in [ReadFormat::Text, ReadFormat::Binary] {
        let (failed, sent) = read_all(&mut conn, &failing, format).await;
        let e = failed.expect_err("the filter divides by zero at row 2000");
        assert_eq!(e.sqlstate().as_deref(), Some("22012"), "{format:?}: {e:?}");
        assert_eq!(e.class(), ErrorClass::Fatal, "{format:?}: {e:?}");
        assert!(
            sent > 0 && sent < 2000,
            "{format:?}: {sent} rows sent before the error (some, not all, must come first)"
        );

        let (n, sent) = read_all(&mut conn, &info, format).await;
        assert_eq!(
            n.unwrap(),
            ROWS as u64,
            "{format:?}: the read after the error"
        );
        assert_eq!(sent, ROWS, "{format:?}");
    }
    conn.close().await;
    db.cleanup().await;
}

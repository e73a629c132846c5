//! The replication transport over pgwire-replication. That crate decodes
//! the pgoutput `Begin`, `Commit` and `Message` messages itself and does not
//! hand on their bytes, so the transport carries its fields over into
//! `cdc_postgres::pgoutput`'s types: here they must equal what
//! `pgoutput::decode` reads from the same messages, fetched as bytes from
//! the same slot with `pg_logical_slot_peek_binary_changes`.

use std::time::Duration;

use cdc_core::Lsn;
use cdc_postgres::conn::ConnParams;
use cdc_postgres::pgoutput::{self, Message};
use cdc_postgres::replication::{PgWireTransport, Recv, ReplicationTransport, WireEvent};
use integration_tests::{unique_suffix, TestDb};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Begin, Commit and logical decoding messages: the ones the protocol
/// client decodes itself.
fn predecoded(m: &Message) -> bool {
    matches!(
        m,
        Message::Begin(_) | Message::Commit(_) | Message::Message(_)
    )
}

#[tokio::test]
async fn begin_commit_and_message_equal_what_the_decoder_reads() {
    let db = TestDb::create("transport").await;
    let s = unique_suffix();
    let (slot, publication) = (format!("rt_{s}"), format!("rtp_{s}"));
    db.exec(&format!(
        "CREATE TABLE public.t (id int PRIMARY KEY, v text);\
         CREATE PUBLICATION {publication} FOR TABLE public.t;"
    ))
    .await;
    db.exec(&format!(
        "SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"
    ))
    .await;
    db.exec(
        "BEGIN;\
         INSERT INTO public.t VALUES (1, 'a');\
         SELECT pg_logical_emit_message(true, 'tx_prefix', 'inside');\
         COMMIT;\
         SELECT pg_logical_emit_message(false, 'plain', '\\x00ff'::bytea);\
         INSERT INTO public.t VALUES (2, 'b');",
    )
    .await;

    let peeked: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
         'proto_version', '1', 'publication_names', $2, 'messages', 'true')",
    )
    .bind(&slot)
    .bind(&publication)
    .fetch_all(db.pool())
    .await
    .expect("peeking at the slot");
    let expected: Vec<Message> = peeked
        .into_iter()
        .map(|data| pgoutput::decode(&data.into()).expect("a pgoutput message"))
        .filter(predecoded)
        .collect();
    // Two transactions (Begin, Commit each), a transactional and a plain
    // message.
    assert_eq!(expected.len(), 6, "{expected:#?}");

    let params = ConnParams::parse(db.url()).expect("the test database URL");
    let mut transport = PgWireTransport::start(
        PgWireTransport::replication_config(&params, &slot, &publication),
        Lsn::ZERO,
        Duration::from_secs(1),
        64,
    )
    .await
    .expect("starting the stream");
    let mut streamed = Vec::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while streamed.len() < expected.len() && tokio::time::Instant::now() < deadline {
        match transport.recv(Duration::from_millis(500)).await {
            Ok(Recv::Event(WireEvent::Decoded(m))) => streamed.push(m),
            Ok(Recv::Event(WireEvent::Data { data, .. })) => {
                let m = pgoutput::decode(&data).expect("a pgoutput message");
                assert!(
                    !predecoded(&m),
                    "the transport handed on a {} as bytes",
                    m.kind()
                );
            }
            Ok(Recv::Event(WireEvent::KeepAlive { .. }) | Recv::Idle) => {}
            Ok(Recv::Ended) => break,
            Err(e) => panic!("stream: {}", cdc_core::error_chain(&e)),
        }
    }
    transport.shutdown(Lsn::ZERO).await.expect("shutdown");
    assert_eq!(streamed, expected);
    db.cleanup().await;
}

//! async-nats errors mapped to retryable or fatal [`SinkError`]s.

use std::error::Error as StdError;

use async_nats::jetstream::context::{
    CreateStreamError, CreateStreamErrorKind, GetStreamError, GetStreamErrorKind, PublishError,
    PublishErrorKind, RequestError, RequestErrorKind,
};
use async_nats::jetstream::ErrorCode;
use async_nats::{ConnectError, ConnectErrorKind};
use cdc_core::SinkError;

/// The JetStream API error somewhere in `err`'s source chain.
pub fn api_error<'a>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a async_nats::jetstream::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(api) = e.downcast_ref::<async_nats::jetstream::Error>() {
            return Some(api);
        }
        cur = e.source();
    }
    None
}

/// `true` when a request error in `err`'s chain says nobody answers the
/// JetStream API: JetStream is not enabled on the server.
fn no_responders(err: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<RequestError>() {
            return r.kind() == RequestErrorKind::NoResponders;
        }
        cur = e.source();
    }
    false
}

/// A failed connection attempt.
pub fn connect_error(url: &str, err: ConnectError) -> SinkError {
    // The cause's text follows from the source chain.
    let message = format!("cannot connect to NATS at {url}");
    match err.kind() {
        ConnectErrorKind::ServerParse
        | ConnectErrorKind::Authentication
        | ConnectErrorKind::AuthorizationViolation
        | ConnectErrorKind::Tls => SinkError::fatal(message),
        ConnectErrorKind::Dns
        | ConnectErrorKind::TimedOut
        | ConnectErrorKind::Io
        | ConnectErrorKind::MaxReconnects => SinkError::retryable(message),
    }
    .with_source(err)
}

const NOT_ENABLED: &str =
    "JetStream is not enabled on the NATS server (start nats-server with `-js`), or set `jetstream: false` to publish with core NATS (not durable)";

/// `true` when a stream lookup failed because the stream does not exist.
pub fn is_stream_not_found(err: &GetStreamError) -> bool {
    matches!(err.kind(), GetStreamErrorKind::JetStream(api) if api.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// A failed stream lookup (other than "not found").
pub fn get_stream_error(name: &str, err: GetStreamError) -> SinkError {
    match err.kind() {
        GetStreamErrorKind::JetStream(api)
            if api.error_code() == ErrorCode::JETSTREAM_NOT_ENABLED
                || api.error_code() == ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT =>
        {
            SinkError::fatal(NOT_ENABLED).with_source(err)
        }
        GetStreamErrorKind::Request if no_responders(&err) => {
            SinkError::fatal(NOT_ENABLED).with_source(err)
        }
        GetStreamErrorKind::EmptyName | GetStreamErrorKind::InvalidStreamName => {
            SinkError::fatal(format!("invalid JetStream stream name `{name}`")).with_source(err)
        }
        _ => SinkError::retryable(format!("cannot look up JetStream stream `{name}`"))
            .with_source(err),
    }
}

/// A failed stream creation; `Ok(())` when someone else created it first.
pub fn create_stream_error(name: &str, err: CreateStreamError) -> Result<(), SinkError> {
    let message = format!("cannot create JetStream stream `{name}`");
    match err.kind() {
        CreateStreamErrorKind::JetStream(api)
            if api.error_code() == ErrorCode::STREAM_NAME_EXIST =>
        {
            Ok(())
        }
        CreateStreamErrorKind::JetStreamUnavailable => {
            Err(SinkError::fatal(NOT_ENABLED).with_source(err))
        }
        CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::Response => {
            Err(SinkError::retryable(message).with_source(err))
        }
        _ => Err(SinkError::fatal(message).with_source(err)),
    }
}

/// JetStream refused a chained message (`Nats-Expected-Last-Msg-Id`)
/// because the stream's last message is another one. When that one is
/// ours, an earlier message of the batch was lost with a dropped connection
/// and the batch is sent again (retryable). When it is not ours, someone
/// else publishes into the stream: chaining cannot work there (fatal).
pub fn wrong_last_id(
    subject: &str,
    stream: Option<&str>,
    own_prefix: &str,
    err: PublishError,
) -> SinkError {
    let text = api_error(&err).map(ToString::to_string).unwrap_or_default();
    let last = text
        .strip_prefix("wrong last msg ID: ")
        .map(|rest| rest.split(" (code ").next().unwrap_or(rest));
    match last {
        Some(last) if !last.is_empty() && !last.starts_with(own_prefix) => {
            let stream = stream.map_or_else(|| "the stream".to_owned(), |s| format!("stream `{s}`"));
            SinkError::fatal(format!(
                "{stream} also stores messages of another publisher (its last message id is `{last}`): \
                 `exclusive_stream: true` needs a stream of its own — give this sink its own stream, \
                 or set `exclusive_stream: false` (order per subject is then not kept across reconnects)"
            ))
            .with_source(err)
        }
        _ => SinkError::retryable(format!(
            "JetStream refused a message to `{subject}` because an earlier one of the batch was lost \
             (connection dropped?); the batch will be sent again"
        ))
        .with_source(err),
    }
}

/// A publish that failed before or while waiting for its PubAck (other
/// than "no stream", which the sink checks itself).
pub fn publish_error(subject: &str, err: PublishError) -> SinkError {
    match err.kind() {
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => {
            SinkError::retryable(format!("no PubAck for a message to `{subject}`")).with_source(err)
        }
        PublishErrorKind::MaxPayloadExceeded => SinkError::fatal(format!(
            "a message to `{subject}` is larger than the server's max_payload"
        ))
        .with_source(err),
        _ => match api_error(&err).map(|e| e.error_code()) {
            Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) => SinkError::fatal(format!(
                "a message to `{subject}` is larger than the stream's max_msg_size"
            ))
            .with_source(err),
            Some(ErrorCode::JETSTREAM_NOT_ENABLED)
            | Some(ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT) => {
                SinkError::fatal(NOT_ENABLED).with_source(err)
            }
            // Storage full, leader elections, ...: may clear up.
            _ => SinkError::retryable(format!("JetStream rejected a message to `{subject}`"))
                .with_source(err),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn wrong_last(last: &str) -> PublishError {
        let api: async_nats::jetstream::Error = serde_json::from_value(serde_json::json!({
            "code": 400,
            "err_code": 10070,
            "description": format!("wrong last msg ID: {last}"),
        }))
        .unwrap();
        PublishError::with_source(PublishErrorKind::WrongLastMessageId, api)
    }

    #[test]
    fn a_lost_predecessor_of_our_own_is_retried() {
        let e = wrong_last_id(
            "cdc.public.t",
            Some("S"),
            "app:",
            wrong_last("app:db:1:c:0/10:3"),
        );
        assert!(e.is_retryable(), "{e}");
    }

    #[test]
    fn a_foreign_last_message_is_fatal_and_says_what_to_do() {
        let e = wrong_last_id(
            "cdc.public.t",
            Some("S"),
            "app:",
            wrong_last("other:db:1:c:0/10:3"),
        );
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(text.contains("stream `S`"), "{text}");
        assert!(text.contains("exclusive_stream: false"), "{text}");
        assert!(text.contains("other:db:1:c:0/10:3"), "{text}");
    }

    #[test]
    fn an_unreadable_refusal_is_retried() {
        let e = wrong_last_id(
            "s",
            None,
            "app:",
            PublishError::new(PublishErrorKind::WrongLastMessageId),
        );
        assert!(e.is_retryable());
    }
}

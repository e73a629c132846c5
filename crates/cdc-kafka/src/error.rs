//! What can go wrong in the sink, and whether retrying can help.

use cdc_core::{ErrorClass, SinkError};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// An error of the Kafka sink, classified by [`KafkaSinkError::class`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum KafkaSinkError {
    /// librdkafka refused the producer configuration.
    #[error("invalid Kafka producer configuration: {0}")]
    Config(#[source] KafkaError),
    /// A table has no topic.
    #[error("{0}")]
    Route(String),
    /// A topic does not exist and the sink may not create it.
    #[error(
        "topic `{topic}` (table {table}) does not exist: create it, or set `create_topics` so the sink creates it"
    )]
    MissingTopic { topic: String, table: String },
    /// Looking a topic up failed.
    #[error("cannot look up topic `{topic}`: {source}")]
    Metadata {
        topic: String,
        #[source]
        source: KafkaError,
    },
    /// Creating a topic failed.
    #[error("cannot create topic `{topic}`: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    /// Creating topics failed as a whole (e.g. timeout).
    #[error("cannot create topic `{topic}`: {source}")]
    CreateTopicRequest {
        topic: String,
        #[source]
        source: KafkaError,
    },
    /// The producer did not accept a message into its queue.
    #[error("cannot queue a message of {bytes} bytes for topic `{topic}`: {source}")]
    Enqueue {
        topic: String,
        bytes: usize,
        #[source]
        source: KafkaError,
    },
    /// A delivery report came back with an error.
    #[error("delivery of a message of {bytes} bytes to topic `{topic}` failed: {source}")]
    Delivery {
        topic: String,
        bytes: usize,
        #[source]
        source: KafkaError,
    },
    /// The producer went away before the delivery report came.
    #[error("the Kafka producer stopped before reporting a delivery")]
    Canceled,
}

impl KafkaSinkError {
    /// Retry the batch, or stop the pipeline.
    pub(crate) fn class(&self) -> ErrorClass {
        match self {
            Self::Config(_) | Self::Route(_) | Self::MissingTopic { .. } => ErrorClass::Fatal,
            Self::CreateTopic { code, .. } => code_class(*code),
            Self::Metadata { source, .. }
            | Self::CreateTopicRequest { source, .. }
            | Self::Enqueue { source, .. }
            | Self::Delivery { source, .. } => match source.rdkafka_error_code() {
                Some(code) => code_class(code),
                None => ErrorClass::Retryable,
            },
            Self::Canceled => ErrorClass::Retryable,
        }
    }

    /// What the user can do about a fatal error.
    fn hint(&self) -> Option<&'static str> {
        let code = match self {
            Self::CreateTopic { code, .. } => Some(*code),
            Self::Metadata { source, .. }
            | Self::CreateTopicRequest { source, .. }
            | Self::Enqueue { source, .. }
            | Self::Delivery { source, .. } => source.rdkafka_error_code(),
            _ => None,
        }?;
        Some(match code {
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge => {
                "the message is larger than the producer or the broker allows: raise the topic's \
                 max.message.bytes (or the broker's message.max.bytes) and the sink's \
                 `properties: { message.max.bytes: ... }`"
            }
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed => {
                "the sink's principal lacks an ACL: it needs WRITE and DESCRIBE on the topic \
                 (and IDEMPOTENT_WRITE on the cluster for the idempotent producer, CREATE for \
                 `create_topics`)"
            }
            RDKafkaErrorCode::SaslAuthenticationFailed | RDKafkaErrorCode::Authentication => {
                "authentication failed: check `auth` and `tls`"
            }
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                "the topic does not exist: create it, or set `create_topics`"
            }
            _ => return None,
        })
    }
}

/// Retryable unless retrying the same messages cannot succeed.
pub(crate) fn code_class(code: RDKafkaErrorCode) -> ErrorClass {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::MessageBatchTooLarge
        | C::InvalidMessage
        | C::InvalidRecord
        | C::InvalidTopic
        | C::InvalidRequiredAcks
        | C::InvalidConfig
        | C::InvalidArgument
        | C::InvalidPartitions
        | C::InvalidReplicationFactor
        | C::PolicyViolation
        | C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::UnsupportedSASLMechanism
        | C::UnsupportedForMessageFormat
        | C::UnsupportedCompressionType
        | C::UnknownTopicOrPartition
        | C::UnknownTopic => ErrorClass::Fatal,
        _ => ErrorClass::Retryable,
    }
}

impl From<KafkaSinkError> for SinkError {
    fn from(e: KafkaSinkError) -> Self {
        let class = e.class();
        let hint = if class == ErrorClass::Fatal {
            e.hint()
        } else {
            None
        };
        match (class, hint) {
            // The message already holds the cause; with a hint after it, a
            // source would only repeat the cause in the error chain.
            (_, Some(h)) => SinkError::fatal(format!("{e} ({h})")),
            (ErrorClass::Fatal, None) => SinkError::fatal(e.to_string()).with_source(e),
            (ErrorClass::Retryable, None) => SinkError::retryable(e.to_string()).with_source(e),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        for (code, class) in [
            (RDKafkaErrorCode::MessageSizeTooLarge, ErrorClass::Fatal),
            (
                RDKafkaErrorCode::TopicAuthorizationFailed,
                ErrorClass::Fatal,
            ),
            (RDKafkaErrorCode::MessageTimedOut, ErrorClass::Retryable),
            (RDKafkaErrorCode::NotEnoughReplicas, ErrorClass::Retryable),
            (RDKafkaErrorCode::AllBrokersDown, ErrorClass::Retryable),
        ] {
            assert_eq!(code_class(code), class, "{code:?}");
        }
        let e: SinkError = KafkaSinkError::Delivery {
            topic: "t".into(),
            bytes: 10,
            source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        }
        .into();
        assert!(!e.is_retryable());
        assert!(e.message().contains("max.message.bytes"), "{}", e.message());
    }
}

//! External document versions from change positions.
//!
//! `version = commit_lsn × 2^16 + min(ordinal, 65535)`, sent with
//! `version_type=external_gte`.
//!
//! * A later transaction has a larger commit LSN, and commit LSNs of two
//!   transactions differ by far more than nothing, so every change of a later
//!   transaction gets a larger version than every change of an earlier one.
//!   Within a transaction the ordinal orders the changes.
//! * The result fits Elasticsearch's version range (a positive signed 64-bit
//!   number) while the commit LSN is below `2^47` (128 TiB of WAL since the
//!   cluster was created). A larger LSN is a fatal error: the sink would
//!   otherwise write versions the server rejects or that do not order.
//! * Ordinals from 65535 on share one version. `external_gte` accepts an
//!   equal version, so those changes still apply in stream order; on a
//!   replay of such a transaction a document can briefly show an earlier
//!   change of that same transaction until the replay reaches the last one.
//!   Strictly older versions are rejected by the server with 409, which the
//!   sink counts as success.
//!   For the same reason a failed `_bulk` item is not sent again when a
//!   later item of the same document in that request was done
//!   ([`crate::bulk::retry_selection`]): it would overwrite the newer
//!   change with an equal version.
//! * Snapshot rows carry C − 1 as their commit LSN (C: the snapshot's
//!   consistent point), and their version is `(C − 1) × 2^16 + 65535 =
//!   C × 2^16 − 1`, whatever their ordinal: a transaction whose commit
//!   record starts exactly at C is streamed (PostgreSQL skips only commits
//!   that start before the consistent point) with versions from `C × 2^16`
//!   on, and must win over the rows read. No streamed commit has a commit
//!   LSN below C, so nothing streamed shares that version.

use cdc_core::{SnapshotMarker, SourceInfo};

/// Bits of the version that hold the ordinal.
const ORDINAL_BITS: u32 = 16;
/// Largest ordinal that gets a version of its own.
const MAX_ORDINAL: u64 = (1 << ORDINAL_BITS) - 1;
/// Commit LSNs from this one on do not fit.
const LSN_LIMIT: u64 = 1 << (63 - ORDINAL_BITS);

/// The external version of a change at `source`'s position.
pub(crate) fn external_version(source: &SourceInfo) -> Result<i64, String> {
    let lsn = source.commit_lsn.as_u64();
    if lsn >= LSN_LIMIT {
        return Err(format!(
            "commit LSN {} is beyond the Elasticsearch version scheme's limit ({}): \
             versions would overflow",
            source.commit_lsn,
            cdc_core::Lsn(LSN_LIMIT)
        ));
    }
    let version = if source.snapshot == SnapshotMarker::False {
        (lsn << ORDINAL_BITS) | source.ordinal.min(MAX_ORDINAL)
    } else {
        // Reads sit at C − 1: the top of that slot is just below every
        // change committed at C or later, whatever the read's ordinal.
        (lsn << ORDINAL_BITS) | MAX_ORDINAL
    };
    // `lsn < 2^47` makes this at most 2^63 - 1.
    i64::try_from(version.max(1)).map_err(|_| format!("version {version} out of range"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use cdc_core::Lsn;

    fn at(lsn: u64, ordinal: u64) -> SourceInfo {
        SourceInfo {
            commit_lsn: Lsn(lsn),
            ordinal,
            ..SourceInfo::default()
        }
    }

    #[test]
    fn later_changes_get_larger_versions() {
        let a = external_version(&at(0x1_6B37_4D84, 0)).unwrap();
        let b = external_version(&at(0x1_6B37_4D84, 1)).unwrap();
        let c = external_version(&at(0x1_6B37_4D85, 0)).unwrap();
        assert!(a < b && b < c);
        let late = external_version(&at(0x1_6B37_4D84, u64::MAX)).unwrap();
        assert!(late < c);
        assert_eq!(late, external_version(&at(0x1_6B37_4D84, 65535)).unwrap());
    }

    #[test]
    fn snapshot_reads_rank_below_changes_at_the_snapshot_lsn() {
        // Reads of a snapshot with consistent point C carry C − 1.
        let c = 0x1_6B37_4D80;
        let read = |ordinal| SourceInfo {
            snapshot: SnapshotMarker::True,
            ..at(c - 1, ordinal)
        };
        let first = external_version(&read(0)).unwrap();
        assert_eq!(first, external_version(&read((7 << 32) | 12)).unwrap());
        assert_eq!(first, i64::try_from((c << ORDINAL_BITS) - 1).unwrap());
        assert!(first < external_version(&at(c, 0)).unwrap());
        assert!(first > external_version(&at(c - 8, u64::MAX)).unwrap());
    }

    #[test]
    fn range_limits() {
        let max = external_version(&at(LSN_LIMIT - 1, u64::MAX)).unwrap();
        assert_eq!(max, i64::MAX);
        assert!(external_version(&at(LSN_LIMIT, 0)).is_err());
        assert_eq!(external_version(&at(0, 0)).unwrap(), 1);
    }
}

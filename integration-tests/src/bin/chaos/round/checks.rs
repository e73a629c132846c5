//! The end of a round: the snapshot job done, the slot caught up, and the
//! merged output files equal to the tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;

use integration_tests::replay::{apply_keyed, diff, merged, Tail, CATCH_UP_TIMEOUT};

use super::Round;
use crate::server::{current_wal_lsn, incremental_states, job_state, slot_confirmed};
use crate::tables::TABLES;

impl Round<'_> {
    /// The output files of every incarnation of every instance.
    fn tails(&self) -> Vec<Tail> {
        let outputs: Vec<PathBuf> = self
            .instances
            .iter()
            .flat_map(|inst| inst.outputs.iter().cloned())
            .collect();
        Tail::of_files(&outputs)
    }

    /// Waits for the end state and compares; `Err` describes a failure.
    pub(super) async fn converge(&mut self, rows: &mut usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        // The snapshot finished.
        loop {
            let state = job_state(self.cluster, self.db.name(), &self.slot).await;
            if state.as_deref() == Some("done") {
                if self.snapshot_done_at.is_none() {
                    self.snapshot_done_at = Some(self.started.elapsed());
                    self.note("snapshot job done");
                }
                break;
            }
            if Instant::now() >= deadline {
                bail!("the snapshot job is not done after {CATCH_UP_TIMEOUT:?} (state {state:?})");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // The incremental snapshots asked for finished.
        while self.signals > 0 {
            let states = incremental_states(self.cluster, self.db.name(), &self.slot).await;
            let all_done = |s: &Vec<(i64, String)>| {
                let asked: std::collections::HashSet<i64> = s.iter().map(|x| x.0).collect();
                asked.len() >= self.signals as usize && s.iter().all(|x| x.1 == "done")
            };
            if states.as_ref().is_some_and(all_done) {
                self.note("incremental snapshots done");
                break;
            }
            if states
                .as_ref()
                .is_some_and(|s| s.iter().any(|x| x.1.starts_with("failed")))
                || Instant::now() >= deadline
            {
                bail!("incremental snapshots not done after {CATCH_UP_TIMEOUT:?}: {states:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // The slot confirmed everything written so far.
        let target = current_wal_lsn(self.cluster, self.db.name()).await?;
        self.note(format!("waiting for the slot to confirm {target}"));
        loop {
            let confirmed = slot_confirmed(self.cluster, self.db.name(), &self.slot).await;
            if confirmed.is_some_and(|c| c >= target) {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the slot's confirmed_flush_lsn ({}) did not reach {target} within {CATCH_UP_TIMEOUT:?}",
                    confirmed.map_or("-".into(), |c| c.to_string())
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.note("slot confirmed; waiting for the files to stop growing");
        let mut want = BTreeMap::new();
        for (sql, _, key) in TABLES {
            let rows_of = self.db.to_jsonb_rows_keyed(sql, key).await;
            *rows += rows_of.len();
            want.insert(sql, rows_of);
        }
        let mut tails = self.tails();
        let mut quiet = 0;
        loop {
            let added: usize = tails.iter_mut().map(Tail::poll).sum();
            quiet = if added == 0 { quiet + 1 } else { 0 };
            let stable = quiet >= 4;
            if stable || Instant::now() >= deadline {
                let refs: Vec<&Tail> = tails.iter().collect();
                let events = merged(&refs);
                let mut report = String::new();
                for (sql, table, key) in TABLES {
                    let got = apply_keyed(&events, table, key);
                    if let Some(d) = diff(&got, &want[sql]) {
                        let _ = writeln!(report, "{table}: {d}");
                    }
                }
                if report.is_empty() {
                    self.note(format!("converged ({} events)", events.len()));
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    bail!(
                        "the merged files ({} events in {} files) differ from the tables after {CATCH_UP_TIMEOUT:?}:\n{report}",
                        events.len(),
                        tails.len()
                    );
                }
                // Not yet: keep polling until the deadline.
                quiet = 0;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

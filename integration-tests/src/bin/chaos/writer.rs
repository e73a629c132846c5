//! The writer: concurrent transactions on the captured tables while the
//! faults hit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use crate::plan::Plan;
use crate::rng::Rng;

#[derive(Debug)]
pub(crate) struct WriterStats {
    pub(crate) transactions: u64,
    pub(crate) failed: u64,
    pub(crate) truncated: bool,
}

/// Changes the tables until `stop`: transactions of 1 to ~200 statements;
/// errors (a terminated session, a restarting server) only cost the
/// transaction, and it connects again.
pub(crate) async fn writer(url: String, plan: Plan, stop: Arc<AtomicBool>) -> WriterStats {
    let mut r = Rng(plan.seed.rotate_left(17) ^ 0x5eed);
    let mut stats = WriterStats {
        transactions: 0,
        failed: 0,
        truncated: false,
    };
    let t0 = Instant::now();
    let mut next_plain = plan.rows_plain as i64 + 1;
    let mut next_toast = plan.rows_toast as i32 + 1;
    let mut next_comp = plan.rows_comp as i32 + 1;
    let mut tag: u64 = 0;
    let mut conn: Option<PgConnection> = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match tokio::time::timeout(Duration::from_secs(3), PgConnection::connect(&url)).await {
                Ok(Ok(mut c)) => {
                    let _ = sqlx::raw_sql("SET lock_timeout = '5s'; SET statement_timeout = '20s'")
                        .execute(&mut c)
                        .await;
                    conn = Some(c);
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        let size = match r.below(100) {
            0..=69 => r.range(1, 3),
            70..=94 => r.range(4, 20),
            _ => r.range(50, 200),
        };
        let truncate = !stats.truncated && plan.truncate_at.is_some_and(|t| t0.elapsed() >= t);
        let res: Result<(), sqlx::Error> = async {
            let mut tx = c.begin().await?;
            if truncate {
                let sql = if r.chance(50) {
                    "TRUNCATE public.t_plain"
                } else {
                    "TRUNCATE public.t_plain, public.t_comp"
                };
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            for _ in 0..size {
                tag += 1;
                let tag_s = format!("{}-{tag}", plan.seed);
                match r.below(100) {
                    // t_plain
                    0..=19 => {
                        sqlx::query(
                            "INSERT INTO public.t_plain (id, n, s, b) VALUES ($1, $2, md5($3), $4)",
                        )
                        .bind(next_plain)
                        .bind(r.below(1000) as i32)
                        .bind(&tag_s)
                        .bind(r.chance(50))
                        .execute(&mut *tx)
                        .await?;
                        next_plain += 1;
                    }
                    20..=39 => {
                        sqlx::query(
                            "UPDATE public.t_plain SET n = n + $2, s = md5($3) WHERE id = $1",
                        )
                        .bind(r.range(1, next_plain as u64 - 1) as i64)
                        .bind(r.range(1, 9) as i32)
                        .bind(&tag_s)
                        .execute(&mut *tx)
                        .await?;
                    }
                    40..=46 => {
                        sqlx::query("DELETE FROM public.t_plain WHERE id = $1")
                            .bind(r.range(1, next_plain as u64 - 1) as i64)
                            .execute(&mut *tx)
                            .await?;
                    }
                    // t_toast
                    47..=52 => {
                        sqlx::query(
                            "INSERT INTO public.t_toast (id, n, doc, doc2) \
                             VALUES ($1, 0, public.chain($2, $3), public.chain($2 || 'b', $4))",
                        )
                        .bind(next_toast)
                        .bind(&tag_s)
                        .bind(r.range(70, 130) as i32)
                        .bind(r.range(70, 100) as i32)
                        .execute(&mut *tx)
                        .await?;
                        next_toast += 1;
                    }
                    53..=62 => {
                        // Leaves both TOASTed columns as they are.
                        sqlx::query("UPDATE public.t_toast SET n = n + 1 WHERE id = $1")
                            .bind(r.range(1, next_toast as u64 - 1) as i32)
                            .execute(&mut *tx)
                            .await?;
                    }
                    63..=67 => {
                        let sql = match r.below(3) {
                            0 => "UPDATE public.t_toast SET doc = public.chain($2, $3) WHERE id = $1",
                            1 => "UPDATE public.t_toast SET doc2 = public.chain($2, $3), n = n + 1 WHERE id = $1",
                            _ => "UPDATE public.t_toast SET doc = public.chain($2, $3), doc2 = NULL WHERE id = $1",
                        };
                        sqlx::query(sql)
                            .bind(r.range(1, next_toast as u64 - 1) as i32)
                            .bind(&tag_s)
                            .bind(r.range(70, 130) as i32)
                            .execute(&mut *tx)
                            .await?;
                    }
                    68..=70 => {
                        sqlx::query("DELETE FROM public.t_toast WHERE id = $1")
                            .bind(r.range(1, next_toast as u64 - 1) as i32)
                            .execute(&mut *tx)
                            .await?;
                    }
                    // t_comp
                    71..=80 => {
                        sqlx::query(
                            "INSERT INTO public.t_comp (a, b, v, note) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(next_comp)
                        .bind(if r.chance(50) { "k1" } else { "k2" })
                        .bind(r.below(1000) as i32)
                        .bind(&tag_s)
                        .execute(&mut *tx)
                        .await?;
                        next_comp += 1;
                    }
                    81..=90 => {
                        sqlx::query("UPDATE public.t_comp SET v = v + 1, note = $2 WHERE a = $1")
                            .bind(r.range(1, next_comp as u64 - 1) as i32)
                            .bind(&tag_s)
                            .execute(&mut *tx)
                            .await?;
                    }
                    91..=93 => {
                        // A key change: b gets a value no other row has.
                        sqlx::query(
                            "UPDATE public.t_comp SET b = 'm' || $3 WHERE a = $1 AND b = $2",
                        )
                        .bind(r.range(1, next_comp as u64 - 1) as i32)
                        .bind(if r.chance(50) { "k1" } else { "k2" })
                        .bind(&tag_s)
                        .execute(&mut *tx)
                        .await?;
                    }
                    _ => {
                        sqlx::query("DELETE FROM public.t_comp WHERE a = $1")
                            .bind(r.range(1, next_comp as u64 - 1) as i32)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            tx.commit().await
        }
        .await;
        match res {
            Ok(()) => {
                stats.transactions += 1;
                if truncate {
                    stats.truncated = true;
                }
            }
            Err(_) => {
                stats.failed += 1;
                if let Some(c) = conn.take() {
                    let _ = c.close().await;
                }
            }
        }
        tokio::time::sleep(r.ms(5, 60)).await;
    }
    if let Some(c) = conn.take() {
        let _ = c.close().await;
    }
    stats
}

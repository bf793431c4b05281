//! The request log as the source of truth of spend: what limit windows are rebuilt from after a
//! restart or an emptied Redis.

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use gateway_core::limit::window::EpochMs;
use gateway_core::limit::{SpendEvent, SpendHistory, Subject, SubjectKind};
use gateway_core::store::state::StateError;
use gateway_core::usage::UsdNanos;

use super::{Database, Result, with_pool};

/// One query text per subject column: SQL cannot bind a column name.
macro_rules! per_subject {
    ($kind:expr, $head:literal, $tail:literal) => {
        match $kind {
            SubjectKind::User => concat!($head, "user_id", $tail),
            SubjectKind::Key => concat!($head, "key_id", $tail),
            SubjectKind::Provider => concat!($head, "provider_id", $tail),
        }
    };
}

fn instant(ms: EpochMs) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl Database {
    /// Billed requests of `subject` that arrived at or after `from_ms`, oldest first.
    pub async fn spend_events(&self, subject: Subject, from_ms: EpochMs) -> Result<Vec<SpendEvent>> {
        let sql = per_subject!(
            subject.kind,
            "SELECT created_at, request_id, cost_nanousd FROM request_log WHERE ",
            " = $1 AND created_at >= $2 AND cost_nanousd > 0 ORDER BY created_at"
        );
        let rows: Vec<(DateTime<Utc>, String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(sql).bind(subject.id).bind(instant(from_ms)).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(|(at, id, cost)| (at.timestamp_millis(), id, UsdNanos(cost))).collect())
    }

    /// Spend of `subject` on requests that arrived in `[from_ms, to_ms)`.
    pub async fn spend_sum(
        &self,
        subject: Subject,
        from_ms: EpochMs,
        to_ms: Option<EpochMs>,
    ) -> Result<UsdNanos> {
        // Sums of BIGINT are NUMERIC on PostgreSQL: cast back, both backends then give i64.
        let total: i64 = match to_ms {
            Some(to) => {
                let sql = per_subject!(
                    subject.kind,
                    "SELECT CAST(COALESCE(SUM(cost_nanousd), 0) AS BIGINT) FROM request_log WHERE ",
                    " = $1 AND created_at >= $2 AND created_at < $3"
                );
                with_pool!(self, |pool| {
                    sqlx::query_scalar(sql)
                        .bind(subject.id)
                        .bind(instant(from_ms))
                        .bind(instant(to))
                        .fetch_one(pool)
                        .await?
                })
            }
            None => {
                let sql = per_subject!(
                    subject.kind,
                    "SELECT CAST(COALESCE(SUM(cost_nanousd), 0) AS BIGINT) FROM request_log WHERE ",
                    " = $1 AND created_at >= $2"
                );
                with_pool!(self, |pool| {
                    sqlx::query_scalar(sql).bind(subject.id).bind(instant(from_ms)).fetch_one(pool).await?
                })
            }
        };
        Ok(UsdNanos(total))
    }
}

impl SpendHistory for Database {
    fn events(
        &self,
        subject: Subject,
        from_ms: EpochMs,
    ) -> BoxFuture<'_, std::result::Result<Vec<SpendEvent>, StateError>> {
        Box::pin(async move {
            self.spend_events(subject, from_ms).await.map_err(|e| StateError(format!("request log: {e}")))
        })
    }

    fn sum(
        &self,
        subject: Subject,
        from_ms: EpochMs,
        to_ms: Option<EpochMs>,
    ) -> BoxFuture<'_, std::result::Result<UsdNanos, StateError>> {
        Box::pin(async move {
            self.spend_sum(subject, from_ms, to_ms).await.map_err(|e| StateError(format!("request log: {e}")))
        })
    }
}

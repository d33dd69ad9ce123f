//! `spotpool migrate-store`: every table of one store copied into another, empty one (SQLite to
//! PostgreSQL, or back), then counted again on both sides.
//!
//! Owns: the generic copy. The tables are the source's (its catalog, less [`NOT_COPIED`]), in the
//! order of the destination's foreign keys; the columns are matched by name and each value is
//! converted to its destination column's type (`information_schema.columns` on PostgreSQL). All
//! of it is read from one source snapshot and written in one destination transaction, which
//! first checks that no table it writes holds a row; identity sequences are moved past the
//! copied ids before the commit. The catalogs are read in `catalog.rs`, the values converted in
//! `values.rs`. Must not: name a table's columns (a table a migration adds is copied with no
//! change here), write to the source, or add rows to a destination that has any.

mod catalog;
mod values;

use super::{Pool, Store, StoreError, StoreResult};
use catalog::{
    Destination, Table, destination_table, foreign_keys, in_dependency_order, source_tables,
};
use futures_util::TryStreamExt;
use sqlx::{AssertSqlSafe, Column, QueryBuilder, Row};
use values::{Bind, SourceRow};

/// The tables never copied, and why.
pub const NOT_COPIED: &[(&str, &str)] = &[
    (
        "_sqlx_migrations",
        "each database's own migration history, written when it is opened",
    ),
    // Every row the copy inserts into `users` or `instances` bumps that table's counter through
    // the destination's triggers, in the copy's transaction: the counters move with the rows, as
    // a reader's snapshot needs (`generations.rs`). The source's values would mean nothing there.
    (
        "generations",
        "change counters that the destination's own triggers keep, migration 0010",
    ),
    // Migration 0011: which daemon leads on this database. A lease names its database's
    // daemons; on another database it means nothing.
    (
        "leadership",
        "the lease of the daemons on the source database",
    ),
];

/// Bound parameters per INSERT: under SQLite's limit (32,766) and PostgreSQL's (65,535).
const PARAMETERS_PER_INSERT: usize = 16_000;
/// Rows per INSERT at most, however few the columns.
const ROWS_PER_INSERT: usize = 1_000;

/// A table's rows on both sides, counted after the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    pub table: String,
    pub source: i64,
    pub destination: i64,
}

/// What [`Store::copy_into`] did: each table it copied, in the order it copied them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub tables: Vec<TableCount>,
}

impl CopyReport {
    /// The tables whose counts differ.
    pub fn mismatches(&self) -> Vec<&TableCount> {
        self.tables
            .iter()
            .filter(|t| t.source != t.destination)
            .collect()
    }

    /// The rows in the destination's copied tables.
    pub fn rows(&self) -> i64 {
        self.tables.iter().map(|t| t.destination).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Tables the copy would write already hold rows: "users: 3 rows, journal: 10 rows".
    #[error(
        "the destination already holds data ({0}); migrate-store copies into an empty database only"
    )]
    NotEmpty(String),
    /// The schemas do not match: a table or column missing, a type that cannot be copied.
    #[error("{0}")]
    Schema(String),
    #[error("copying table {table}: {source}")]
    Table { table: String, source: StoreError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Copies every table of this store (less [`NOT_COPIED`]) into `destination`, which must
    /// hold no row in any of them, and counts both sides again after the commit. Both stores
    /// are on the same schema (`Store::open` migrated them); nothing else should write to
    /// either meanwhile (the caller holds the SQLite locks): a count that differs is reported,
    /// not hidden.
    pub async fn copy_into(&self, destination: &Store) -> Result<CopyReport, CopyError> {
        let names = source_tables(self).await?;
        let mut tables = Vec::with_capacity(names.len());
        for name in &names {
            tables.push(destination_table(destination, name).await?);
        }
        let tables = in_dependency_order(tables, &foreign_keys(destination).await?)?;
        let mut writer = Tx::begin_write(destination, &tables).await?;
        refuse_unless_empty(&mut writer, &tables).await?;
        let mut reader = Tx::begin_read(self).await?;
        for table in &tables {
            copy_table(&mut reader, &mut writer, table)
                .await
                .map_err(|source| CopyError::Table {
                    table: table.name.clone(),
                    source,
                })?;
        }
        advance_sequences(&mut writer, &tables).await?;
        writer.commit().await?;
        drop(reader);
        analyze(destination, &tables).await?;
        let mut counts = Vec::with_capacity(tables.len());
        for table in &tables {
            counts.push(TableCount {
                table: table.name.clone(),
                source: count_rows(self, &table.name).await?,
                destination: count_rows(destination, &table.name).await?,
            });
        }
        Ok(CopyReport { tables: counts })
    }
}

/// A transaction on either database: `on_tx!(tx, |conn| body)` runs `body` with `conn` the
/// transaction, compiled once per database like `on_pool!`.
enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx {
            Tx::Sqlite($conn) => $body,
            Tx::Postgres($conn) => $body,
        }
    };
}

/// The store's session limits (`POSTGRES_SESSION_LIMITS`) are for the daemon's short
/// statements; a copy reads a whole table in one statement and holds each side's transaction
/// open while it works on the other, so its transactions run without them.
async fn lift_session_limits(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> StoreResult<()> {
    for (setting, _) in super::POSTGRES_SESSION_LIMITS {
        let lift = format!("SET LOCAL {setting} = 0");
        sqlx::query(AssertSqlSafe(lift)).execute(&mut **tx).await?;
    }
    Ok(())
}

impl Tx {
    /// One read snapshot of `store` for the whole copy.
    async fn begin_read(store: &Store) -> StoreResult<Tx> {
        Ok(match &store.pool {
            // A deferred transaction: its first read fixes the snapshot (WAL) for the rest.
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Pool::Postgres(pool) => {
                let mut tx = pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?;
                lift_session_limits(&mut tx).await?;
                Tx::Postgres(tx)
            }
        })
    }

    /// The destination's transaction, holding off every other writer of `tables` from the
    /// emptiness check to the commit: SQLite's write lock, PostgreSQL's table locks (`NOWAIT`:
    /// a session writing the destination now is an error, not a wait).
    async fn begin_write(store: &Store, tables: &[Table]) -> StoreResult<Tx> {
        Ok(match &store.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                lift_session_limits(&mut tx).await?;
                if !tables.is_empty() {
                    let names: Vec<String> = tables.iter().map(|t| quoted(&t.name)).collect();
                    let lock = format!("LOCK TABLE {} IN EXCLUSIVE MODE NOWAIT", names.join(", "));
                    sqlx::query(AssertSqlSafe(lock)).execute(&mut *tx).await?;
                }
                Tx::Postgres(tx)
            }
        })
    }

    async fn commit(self) -> StoreResult<()> {
        on_tx!(self, |tx| tx.commit().await?);
        Ok(())
    }

    fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres(_))
    }
}

/// `name` as an SQL identifier, in double quotes (both databases read it so).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `CopyError::NotEmpty` naming every table of `tables` that holds a row in the destination.
async fn refuse_unless_empty(writer: &mut Tx, tables: &[Table]) -> Result<(), CopyError> {
    let mut held = Vec::new();
    for table in tables {
        let count = format!("SELECT COUNT(*) FROM {}", quoted(&table.name));
        let rows: i64 = on_tx!(writer, |tx| sqlx::query_scalar(AssertSqlSafe(count))
            .fetch_one(&mut **tx)
            .await
            .map_err(StoreError::from)?);
        if rows > 0 {
            let unit = if rows == 1 { "row" } else { "rows" };
            held.push(format!("{}: {rows} {unit}", table.name));
        }
    }
    if held.is_empty() {
        Ok(())
    } else {
        Err(CopyError::NotEmpty(held.join(", ")))
    }
}

/// Copies every row of `table` from the reader's snapshot into the writer's transaction, in
/// key order, a batch of rows per INSERT.
async fn copy_table(reader: &mut Tx, writer: &mut Tx, table: &Table) -> StoreResult<()> {
    let order: Vec<String> = table.key.iter().map(|c| quoted(c)).collect();
    let mut select = format!("SELECT * FROM {}", quoted(&table.name));
    if !order.is_empty() {
        select.push_str(&format!(" ORDER BY {}", order.join(", ")));
    }
    on_tx!(reader, |tx| {
        let mut rows = sqlx::query(AssertSqlSafe(select)).fetch(&mut **tx);
        let mut insert: Option<Insert> = None;
        while let Some(row) = rows.try_next().await? {
            let batch = match &mut insert {
                Some(batch) => batch,
                None => insert.insert(Insert::new(table, writer.is_postgres(), row.columns())?),
            };
            batch.push(&row)?;
            if batch.is_full() {
                batch.flush(writer).await?;
            }
        }
        if let Some(mut batch) = insert {
            batch.flush(writer).await?;
        }
    });
    Ok(())
}

/// A batch of rows for one multi-row INSERT into a table.
struct Insert<'t> {
    /// `INSERT INTO t (columns) [OVERRIDING SYSTEM VALUE] `, before the VALUES.
    head: String,
    /// For each source column (by position), its destination column.
    columns: Vec<&'t Destination>,
    /// The source's key columns, by position: for errors.
    key: Vec<usize>,
    rows: Vec<Vec<Bind>>,
    capacity: usize,
}

impl<'t> Insert<'t> {
    /// For rows with the source's `columns`, each matched by name to the destination's.
    fn new<C: Column>(table: &'t Table, postgres: bool, columns: &[C]) -> StoreResult<Self> {
        let mut matched = Vec::with_capacity(columns.len());
        for column in columns {
            let destination = table.columns.iter().find(|d| d.name == column.name());
            matched.push(destination.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the destination's {} has no column {}: is it on an older schema?",
                    table.name,
                    column.name()
                ))
            })?);
        }
        let names: Vec<String> = matched.iter().map(|d| quoted(&d.name)).collect();
        let mut head = format!(
            "INSERT INTO {} ({}) ",
            quoted(&table.name),
            names.join(", ")
        );
        // Explicit ids into identity columns: required for `GENERATED ALWAYS`, a no-op for
        // `BY DEFAULT`. The sequences are moved past them before the commit.
        if postgres && matched.iter().any(|d| d.identity) {
            head.push_str("OVERRIDING SYSTEM VALUE ");
        }
        let key = columns
            .iter()
            .enumerate()
            .filter(|(_, c)| table.key.iter().any(|k| k == c.name()))
            .map(|(at, _)| at)
            .collect();
        let capacity = (PARAMETERS_PER_INSERT / matched.len().max(1)).clamp(1, ROWS_PER_INSERT);
        Ok(Insert {
            head,
            columns: matched,
            key,
            rows: Vec::with_capacity(capacity),
            capacity,
        })
    }

    /// Adds `row`, each value converted for its destination column.
    fn push(&mut self, row: &impl SourceRow) -> StoreResult<()> {
        let mut values = Vec::with_capacity(self.columns.len());
        for (at, column) in self.columns.iter().enumerate() {
            let bound = column.kind.bind(row.cell(at)?).map_err(|cell| {
                StoreError::Corrupt(format!(
                    "column {} of the row keyed ({}) holds {}, which a {} column cannot take",
                    column.name,
                    self.key_of(row),
                    cell.describe(),
                    column.kind.sql_name()
                ))
            })?;
            values.push(bound);
        }
        self.rows.push(values);
        Ok(())
    }

    fn key_of(&self, row: &impl SourceRow) -> String {
        let parts: Vec<String> = self
            .key
            .iter()
            .map(|at| row.cell(*at).map(|c| c.key_text()).unwrap_or_default())
            .collect();
        parts.join(", ")
    }

    fn is_full(&self) -> bool {
        self.rows.len() >= self.capacity
    }

    /// Writes the rows gathered so far, in one statement.
    async fn flush(&mut self, writer: &mut Tx) -> StoreResult<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        on_tx!(writer, |tx| {
            let mut query = QueryBuilder::new(self.head.as_str());
            query.push_values(rows, |mut values, row| {
                for bound in row {
                    match bound {
                        Bind::I64(v) => values.push_bind(v),
                        Bind::I32(v) => values.push_bind(v),
                        Bind::I16(v) => values.push_bind(v),
                        Bind::F64(v) => values.push_bind(v),
                        Bind::F32(v) => values.push_bind(v),
                        Bind::Bool(v) => values.push_bind(v),
                        Bind::Text(v) => values.push_bind(v),
                        Bind::Bytes(v) => values.push_bind(v),
                    };
                }
            });
            query.build().execute(&mut **tx).await?;
        });
        Ok(())
    }
}

/// PostgreSQL: each identity or serial column's sequence set to its largest copied value, so
/// the next row the daemon inserts gets a larger id. (SQLite's AUTOINCREMENT keeps track by
/// itself.)
async fn advance_sequences(writer: &mut Tx, tables: &[Table]) -> StoreResult<()> {
    let Tx::Postgres(tx) = writer else {
        return Ok(());
    };
    for table in tables {
        for column in &table.columns {
            let Some(sequence) = &column.sequence else {
                continue;
            };
            let max = format!(
                "SELECT MAX({})::bigint FROM {}",
                quoted(&column.name),
                quoted(&table.name)
            );
            let max: Option<i64> = sqlx::query_scalar(AssertSqlSafe(max))
                .fetch_one(&mut **tx)
                .await?;
            if let Some(max) = max {
                sqlx::query("SELECT setval($1::regclass, $2)")
                    .bind(sequence)
                    .bind(max)
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    Ok(())
}

/// PostgreSQL: fresh planner statistics for the copied tables, which autovacuum would gather
/// only later: the daemon's first queries plan on the real row counts.
async fn analyze(store: &Store, tables: &[Table]) -> StoreResult<()> {
    if let Pool::Postgres(pool) = &store.pool
        && !tables.is_empty()
    {
        let names: Vec<String> = tables.iter().map(|t| quoted(&t.name)).collect();
        let analyze = format!("ANALYZE {}", names.join(", "));
        sqlx::query(AssertSqlSafe(analyze)).execute(pool).await?;
    }
    Ok(())
}

async fn count_rows(store: &Store, table: &str) -> StoreResult<i64> {
    let count = format!("SELECT COUNT(*) FROM {}", quoted(table));
    Ok(on_pool!(store, |pool| sqlx::query_scalar(AssertSqlSafe(
        count
    ))
    .fetch_one(pool)
    .await?))
}

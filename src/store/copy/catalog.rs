//! The catalogs the copy reads: the source's tables, each destination table's columns (their
//! kinds, identities and sequences) and key, and the destination's foreign keys, by which the
//! tables are ordered. Must not: change anything.

use super::CopyError;
use super::values::Kind;
use crate::store::{NOT_COPIED, Pool, Store, StoreError, StoreResult};
use std::collections::{BTreeMap, BTreeSet};

/// A destination table: its columns and key, as its catalog has them.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Table {
    pub(super) name: String,
    pub(super) columns: Vec<Destination>,
    /// The primary key's columns, in order: the order the rows are read and written in.
    pub(super) key: Vec<String>,
}

/// A destination column.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Destination {
    pub(super) name: String,
    pub(super) kind: Kind,
    /// PostgreSQL: an identity column (`GENERATED ... AS IDENTITY`), whose explicit values need
    /// `OVERRIDING SYSTEM VALUE` when it is `ALWAYS`.
    pub(super) identity: bool,
    /// PostgreSQL: the sequence behind an identity or serial column.
    pub(super) sequence: Option<String>,
}

/// The tables of `store` the copy reads: its own (no internal one), less [`NOT_COPIED`].
pub(super) async fn source_tables(store: &Store) -> StoreResult<Vec<String>> {
    let mut names: Vec<String> = match &store.pool {
        Pool::Sqlite(pool) => {
            sqlx::query_scalar(
                "SELECT name FROM sqlite_master
                 WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
            )
            .fetch_all(pool)
            .await?
        }
        Pool::Postgres(pool) => {
            sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            )
            .fetch_all(pool)
            .await?
        }
    };
    names.retain(|name| !NOT_COPIED.iter().any(|(skip, _)| skip == name));
    names.sort();
    Ok(names)
}

/// The destination's `name`: its columns, their kinds and sequences, and its key.
pub(super) async fn destination_table(store: &Store, name: &str) -> Result<Table, CopyError> {
    let (columns, key) = match &store.pool {
        Pool::Sqlite(pool) => {
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT name, pk FROM pragma_table_info($1) ORDER BY cid")
                    .bind(name)
                    .fetch_all(pool)
                    .await
                    .map_err(StoreError::from)?;
            let mut key: Vec<&(String, i64)> = rows.iter().filter(|(_, pk)| *pk > 0).collect();
            key.sort_by_key(|(_, pk)| *pk);
            let key = key.into_iter().map(|(column, _)| column.clone()).collect();
            let columns = rows
                .into_iter()
                .map(|(name, _)| Destination {
                    name,
                    kind: Kind::Any,
                    identity: false,
                    sequence: None,
                })
                .collect();
            (columns, key)
        }
        Pool::Postgres(pool) => postgres_columns(pool, name).await?,
    };
    if columns.is_empty() {
        return Err(CopyError::Schema(format!(
            "the destination has no table {name}: is it on an older schema?"
        )));
    }
    Ok(Table {
        name: name.to_string(),
        columns,
        key,
    })
}

/// A PostgreSQL table's columns (by `information_schema.columns`) and primary key.
async fn postgres_columns(
    pool: &sqlx::PgPool,
    table: &str,
) -> Result<(Vec<Destination>, Vec<String>), CopyError> {
    let rows: Vec<(String, String, bool, Option<String>)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text, is_identity::text = 'YES',
                pg_get_serial_sequence(quote_ident(table_name::text), column_name::text)
         FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1
         ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)?;
    let mut columns = Vec::with_capacity(rows.len());
    for (name, data_type, identity, sequence) in rows {
        let kind = Kind::of_postgres(&data_type).ok_or_else(|| {
            CopyError::Schema(format!(
                "{table}.{name} is of type {data_type}, which migrate-store cannot copy"
            ))
        })?;
        columns.push(Destination {
            name,
            kind,
            identity,
            sequence,
        });
    }
    let key: Vec<String> = sqlx::query_scalar(
        "SELECT k.column_name::text
         FROM information_schema.table_constraints c
         JOIN information_schema.key_column_usage k
           ON k.constraint_schema = c.constraint_schema AND k.constraint_name = c.constraint_name
         WHERE c.table_schema = current_schema() AND c.table_name = $1
           AND c.constraint_type = 'PRIMARY KEY'
         ORDER BY k.ordinal_position",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)?;
    Ok((columns, key))
}

/// The destination's foreign keys, as (referencing table, referenced table).
pub(super) async fn foreign_keys(store: &Store) -> StoreResult<Vec<(String, String)>> {
    Ok(match &store.pool {
        Pool::Sqlite(pool) => {
            sqlx::query_as(
                "SELECT m.name, f.\"table\" FROM sqlite_master m
                 JOIN pragma_foreign_key_list(m.name) f WHERE m.type = 'table'",
            )
            .fetch_all(pool)
            .await?
        }
        Pool::Postgres(pool) => {
            sqlx::query_as(
                "SELECT child.relname::text, parent.relname::text FROM pg_constraint c
                 JOIN pg_class child ON child.oid = c.conrelid
                 JOIN pg_class parent ON parent.oid = c.confrelid
                 WHERE c.contype = 'f' AND child.relnamespace = current_schema()::regnamespace",
            )
            .fetch_all(pool)
            .await?
        }
    })
}

/// `tables` with every referenced table before the tables referencing it (by name otherwise);
/// an error for a cycle. A table referencing itself gets its rows in key order.
pub(super) fn in_dependency_order(
    tables: Vec<Table>,
    foreign_keys: &[(String, String)],
) -> Result<Vec<Table>, CopyError> {
    let mut waiting_on: BTreeMap<String, BTreeSet<String>> = tables
        .iter()
        .map(|t| (t.name.clone(), BTreeSet::new()))
        .collect();
    for (child, parent) in foreign_keys {
        if child != parent
            && waiting_on.contains_key(parent)
            && let Some(parents) = waiting_on.get_mut(child)
        {
            parents.insert(parent.clone());
        }
    }
    let mut by_name: BTreeMap<String, Table> =
        tables.into_iter().map(|t| (t.name.clone(), t)).collect();
    let mut ordered = Vec::with_capacity(by_name.len());
    while let Some(ready) = waiting_on
        .iter()
        .find(|(_, parents)| parents.is_empty())
        .map(|(name, _)| name.clone())
    {
        waiting_on.remove(&ready);
        for parents in waiting_on.values_mut() {
            parents.remove(&ready);
        }
        ordered.extend(by_name.remove(&ready));
    }
    if !waiting_on.is_empty() {
        let cycle: Vec<&str> = waiting_on.keys().map(String::as_str).collect();
        return Err(CopyError::Schema(format!(
            "the foreign keys of {} form a cycle: migrate-store cannot order them",
            cycle.join(", ")
        )));
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> Table {
        Table {
            name: name.into(),
            columns: Vec::new(),
            key: Vec::new(),
        }
    }

    fn names(tables: &[Table]) -> Vec<&str> {
        tables.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn referenced_tables_are_copied_before_the_tables_referencing_them() {
        let tables = ["a_child", "b_parent", "c_grandparent", "d_alone"].map(table);
        let keys = [
            ("a_child", "b_parent"),
            ("b_parent", "c_grandparent"),
            ("a_child", "a_child"),
            ("a_child", "not_copied"),
        ]
        .map(|(c, p)| (c.to_string(), p.to_string()));
        let ordered = in_dependency_order(tables.to_vec(), &keys).unwrap();
        assert_eq!(
            names(&ordered),
            ["c_grandparent", "b_parent", "a_child", "d_alone"]
        );
        let cycle = [("a", "b"), ("b", "a")].map(|(c, p)| (c.to_string(), p.to_string()));
        let error = in_dependency_order(["a", "b", "c"].map(table).to_vec(), &cycle).unwrap_err();
        assert!(error.to_string().contains("a, b form a cycle"), "{error}");
    }
}

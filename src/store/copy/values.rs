//! Values on their way from the source to the destination: a [`Cell`] as the source holds it
//! (SQLite by the value's storage class, PostgreSQL by the column's type), a [`Kind`] of
//! destination column, and the [`Bind`] of a cell for its column, or the refusal of a value that
//! does not fit (an integer 2 for a boolean, a text for a bigint). Must not: coerce a value into
//! another meaning (a number from a text, a truncated integer).

use crate::store::{StoreError, StoreResult};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, Row, TypeInfo, ValueRef};

/// What a destination column takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// SQLite: any value, kept as it is given (the column's affinity applies).
    Any,
    Int8,
    Int4,
    Int2,
    Float8,
    Float4,
    Boolean,
    Text,
    Bytes,
}

impl Kind {
    /// A PostgreSQL column's kind, by `information_schema.columns.data_type`; None for a type
    /// the copy does not know.
    pub(super) fn of_postgres(data_type: &str) -> Option<Kind> {
        Some(match data_type {
            "bigint" => Kind::Int8,
            "integer" => Kind::Int4,
            "smallint" => Kind::Int2,
            "double precision" => Kind::Float8,
            "real" => Kind::Float4,
            "boolean" => Kind::Boolean,
            "text" | "character varying" | "character" => Kind::Text,
            "bytea" => Kind::Bytes,
            _ => return None,
        })
    }

    /// `cell` typed for a column of this kind; the cell back if the column cannot take it.
    pub(super) fn bind(self, cell: Cell) -> Result<Bind, Cell> {
        Ok(match (self, cell) {
            (Kind::Any, cell) => cell.into_bind(),
            (kind, Cell::Null) => kind.null(),
            (Kind::Int8, Cell::Integer(v)) => Bind::I64(Some(v)),
            (Kind::Int4, Cell::Integer(v)) => match i32::try_from(v) {
                Ok(v) => Bind::I32(Some(v)),
                Err(_) => return Err(Cell::Integer(v)),
            },
            (Kind::Int2, Cell::Integer(v)) => match i16::try_from(v) {
                Ok(v) => Bind::I16(Some(v)),
                Err(_) => return Err(Cell::Integer(v)),
            },
            (Kind::Float8, Cell::Real(v)) => Bind::F64(Some(v)),
            // An integer in a float column only if the float holds it exactly.
            (Kind::Float8, Cell::Integer(v)) if v as f64 as i64 == v => Bind::F64(Some(v as f64)),
            (Kind::Float4, Cell::Real(v)) => Bind::F32(Some(v as f32)),
            (Kind::Float4, Cell::Integer(v)) if v as f32 as i64 == v => Bind::F32(Some(v as f32)),
            // SQLite keeps a BOOLEAN as the integer 0 or 1.
            (Kind::Boolean, Cell::Integer(v @ (0 | 1))) => Bind::Bool(Some(v == 1)),
            (Kind::Boolean, Cell::Boolean(v)) => Bind::Bool(Some(v)),
            (Kind::Text, Cell::Text(v)) => Bind::Text(Some(v)),
            (Kind::Bytes, Cell::Blob(v)) => Bind::Bytes(Some(v)),
            (_, cell) => return Err(cell),
        })
    }

    /// The type's name in SQL, for errors.
    pub(super) fn sql_name(self) -> &'static str {
        match self {
            Kind::Any => "SQLite",
            Kind::Int8 => "bigint",
            Kind::Int4 => "integer",
            Kind::Int2 => "smallint",
            Kind::Float8 => "double precision",
            Kind::Float4 => "real",
            Kind::Boolean => "boolean",
            Kind::Text => "text",
            Kind::Bytes => "bytea",
        }
    }

    /// A NULL of this kind's type.
    pub(super) fn null(self) -> Bind {
        match self {
            Kind::Int8 => Bind::I64(None),
            Kind::Int4 => Bind::I32(None),
            Kind::Int2 => Bind::I16(None),
            Kind::Float8 => Bind::F64(None),
            Kind::Float4 => Bind::F32(None),
            Kind::Boolean => Bind::Bool(None),
            Kind::Any | Kind::Text => Bind::Text(None),
            Kind::Bytes => Bind::Bytes(None),
        }
    }
}

/// A value as the source holds it, whatever its column says.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    Boolean(bool),
}

impl Cell {
    /// This value bound as what it is (for SQLite, which stores what it is given).
    pub(super) fn into_bind(self) -> Bind {
        match self {
            Cell::Null => Bind::Text(None),
            Cell::Integer(v) => Bind::I64(Some(v)),
            Cell::Real(v) => Bind::F64(Some(v)),
            Cell::Text(v) => Bind::Text(Some(v)),
            Cell::Blob(v) => Bind::Bytes(Some(v)),
            Cell::Boolean(v) => Bind::Bool(Some(v)),
        }
    }

    /// For errors: what the value is, shortened.
    pub(super) fn describe(&self) -> String {
        match self {
            Cell::Null => "NULL".into(),
            Cell::Integer(v) => format!("the integer {v}"),
            Cell::Real(v) => format!("the real {v}"),
            Cell::Text(v) => format!("the text {:?}", v.chars().take(40).collect::<String>()),
            Cell::Blob(v) => format!("a blob of {} bytes", v.len()),
            Cell::Boolean(v) => format!("the boolean {v}"),
        }
    }

    /// For errors: the value as a key part.
    pub(super) fn key_text(&self) -> String {
        match self {
            Cell::Text(v) => v.clone(),
            other => other.describe(),
        }
    }
}

/// A value typed for its destination column.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Bind {
    I64(Option<i64>),
    I32(Option<i32>),
    I16(Option<i16>),
    F64(Option<f64>),
    F32(Option<f32>),
    Bool(Option<bool>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

/// A source row's values, read by what each value is.
pub(super) trait SourceRow: Row {
    fn cell(&self, index: usize) -> StoreResult<Cell>;
}

impl SourceRow for SqliteRow {
    fn cell(&self, index: usize) -> StoreResult<Cell> {
        let value = self.try_get_raw(index)?;
        if value.is_null() {
            return Ok(Cell::Null);
        }
        // The value's own storage class, not the column's declared type.
        let class = value.type_info().name().to_string();
        Ok(match class.as_str() {
            "INTEGER" => Cell::Integer(self.try_get_unchecked(index)?),
            "REAL" => Cell::Real(self.try_get_unchecked(index)?),
            "TEXT" => Cell::Text(self.try_get_unchecked(index)?),
            "BLOB" => Cell::Blob(self.try_get_unchecked(index)?),
            other => return Err(unknown_type(self.column(index).name(), other)),
        })
    }
}

impl SourceRow for PgRow {
    fn cell(&self, index: usize) -> StoreResult<Cell> {
        let name = self.column(index).type_info().name().to_string();
        let cell = match name.as_str() {
            "INT8" => self.try_get::<Option<i64>, _>(index)?.map(Cell::Integer),
            "INT4" => (self.try_get::<Option<i32>, _>(index)?).map(|v| Cell::Integer(v.into())),
            "INT2" => (self.try_get::<Option<i16>, _>(index)?).map(|v| Cell::Integer(v.into())),
            "FLOAT8" => self.try_get::<Option<f64>, _>(index)?.map(Cell::Real),
            "FLOAT4" => (self.try_get::<Option<f32>, _>(index)?).map(|v| Cell::Real(v.into())),
            "BOOL" => self.try_get::<Option<bool>, _>(index)?.map(Cell::Boolean),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => {
                self.try_get::<Option<String>, _>(index)?.map(Cell::Text)
            }
            "BYTEA" => self.try_get::<Option<Vec<u8>>, _>(index)?.map(Cell::Blob),
            other => return Err(unknown_type(self.column(index).name(), other)),
        };
        Ok(cell.unwrap_or(Cell::Null))
    }
}

fn unknown_type(column: &str, type_name: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "column {column} holds a value of type {type_name}, which migrate-store cannot copy"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_converted_to_their_destination_column_and_refused_when_they_do_not_fit() {
        assert_eq!(
            Kind::Int8.bind(Cell::Integer(i64::MAX)),
            Ok(Bind::I64(Some(i64::MAX)))
        );
        assert_eq!(Kind::Int8.bind(Cell::Null), Ok(Bind::I64(None)));
        assert_eq!(
            Kind::Boolean.bind(Cell::Integer(1)),
            Ok(Bind::Bool(Some(true)))
        );
        assert_eq!(
            Kind::Boolean.bind(Cell::Integer(0)),
            Ok(Bind::Bool(Some(false)))
        );
        assert_eq!(Kind::Boolean.bind(Cell::Null), Ok(Bind::Bool(None)));
        assert_eq!(
            Kind::Float8.bind(Cell::Integer(3)),
            Ok(Bind::F64(Some(3.0)))
        );
        let inexact = (1 << 53) + 1;
        assert_eq!(
            Kind::Float8.bind(Cell::Integer(inexact)),
            Err(Cell::Integer(inexact))
        );
        assert_eq!(
            Kind::Any.bind(Cell::Boolean(true)),
            Ok(Bind::Bool(Some(true)))
        );
        assert_eq!(
            Kind::Text.bind(Cell::Text("x".into())),
            Ok(Bind::Text(Some("x".into())))
        );
        assert_eq!(Kind::Boolean.bind(Cell::Integer(2)), Err(Cell::Integer(2)));
        assert_eq!(
            Kind::Int4.bind(Cell::Integer(1 << 40)),
            Err(Cell::Integer(1 << 40))
        );
        assert_eq!(
            Kind::Int8.bind(Cell::Text("1".into())),
            Err(Cell::Text("1".into()))
        );
        assert_eq!(Kind::Text.bind(Cell::Integer(1)), Err(Cell::Integer(1)));
        assert_eq!(Kind::of_postgres("numeric"), None);
    }
}

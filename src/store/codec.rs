//! How a [`Timestamp`] crosses the store's edge, on both backends: the same RFC 3339 `TEXT`
//! recwatch has always stored (`timestamp`'s form, fixed width, so text order is time
//! order), written from the number and read back into it here and nowhere else. A stored
//! text that is not a time fails the row's read, and sqlx's error names the column with the
//! text (`error occurred while decoding column "observed_at": `x` is not an RFC 3339 time`).
//!
//! [`Timestamp`]: crate::domain::Timestamp

use crate::domain::Timestamp;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

impl<DB: Database> Type<DB> for Timestamp
where
    String: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <String as Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <String as Type<DB>>::compatible(ty)
    }
}

impl<'q, DB: Database> Encode<'q, DB> for Timestamp
where
    String: Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        self.to_string().encode(buf)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for Timestamp
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Timestamp, BoxDynError> {
        Ok(Timestamp::parse(<&'r str as Decode<'r, DB>>::decode(
            value,
        )?)?)
    }
}

/// A time read in place from a row's text (`scan.rs`'s passes, which bypass sqlx's rows):
/// the same reader, and the same error sqlx gives a column it cannot decode.
pub(super) fn column_time(column: &str, text: &str) -> Result<Timestamp, super::StoreError> {
    Timestamp::parse(text).map_err(|e| {
        super::StoreError::from(sqlx::Error::ColumnDecode {
            index: format!("{column:?}"),
            source: Box::new(e),
        })
    })
}

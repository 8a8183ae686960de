//! Descriptions of the generated tables: names, columns, SQL types and which
//! columns hold identifiers of which identifier type.

use std::fmt;

/// SQL type of a generated column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SqlType {
    /// Variable-length text (Arrow `Utf8`).
    Text,
    /// 64-bit integer (Arrow `Int64`).
    BigInt,
    /// 64-bit float (Arrow `Float64`).
    Double,
    /// Boolean (Arrow `Boolean`).
    Boolean,
    /// Timestamp without time zone, microsecond precision
    /// (Arrow `Timestamp(Microsecond, None)`); values are UTC.
    Timestamp,
}

impl SqlType {
    /// The SQL spelling used by [`create_table_sql`].
    pub fn as_sql(self) -> &'static str {
        match self {
            SqlType::Text => "TEXT",
            SqlType::BigInt => "BIGINT",
            SqlType::Double => "DOUBLE",
            SqlType::Boolean => "BOOLEAN",
            SqlType::Timestamp => "TIMESTAMP",
        }
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_sql())
    }
}

/// The kind of identifier a column holds, for identity resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdType {
    /// An e-mail address (`email`).
    Email,
    /// A telephone number (`phone`).
    Phone,
    /// A CRM contact id (`crm_id`).
    CrmId,
    /// A loyalty programme member id (`loyalty_id`).
    LoyaltyId,
    /// A web-site account id (`user_id`).
    UserId,
    /// A browser cookie id (`cookie`).
    Cookie,
    /// An e-mail service provider subscriber id (`esp_id`).
    EspId,
}

impl IdType {
    /// Every identifier type.
    pub const ALL: [IdType; 7] = [
        IdType::Email,
        IdType::Phone,
        IdType::CrmId,
        IdType::LoyaltyId,
        IdType::UserId,
        IdType::Cookie,
        IdType::EspId,
    ];

    /// The identifier type's name: `email`, `phone`, `crm_id`, `loyalty_id`,
    /// `user_id`, `cookie` or `esp_id`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdType::Email => "email",
            IdType::Phone => "phone",
            IdType::CrmId => "crm_id",
            IdType::LoyaltyId => "loyalty_id",
            IdType::UserId => "user_id",
            IdType::Cookie => "cookie",
            IdType::EspId => "esp_id",
        }
    }
}

impl fmt::Display for IdType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One column of a generated table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: &'static str,
    pub sql_type: SqlType,
    /// Whether the column can be NULL (an empty unquoted CSV field).
    pub nullable: bool,
    /// The identifier type held by this column, if any.
    pub identifier: Option<IdType>,
}

/// One generated table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// Table name, also the file stem (`<name>.csv`, `<name>.parquet`).
    pub name: &'static str,
    /// Which source system the table comes from.
    pub source: &'static str,
    pub columns: &'static [ColumnSpec],
}

impl TableSpec {
    /// The column named `name`, if any.
    pub fn column(&self, name: &str) -> Option<&'static ColumnSpec> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Index of the column named `name`, if any.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// `(column name, identifier type)` for every identifier column.
    pub fn identifier_columns(&self) -> impl Iterator<Item = (&'static str, IdType)> + 'static {
        self.columns
            .iter()
            .filter_map(|c| c.identifier.map(|t| (c.name, t)))
    }
}

const fn col(
    name: &'static str,
    sql_type: SqlType,
    nullable: bool,
    identifier: Option<IdType>,
) -> ColumnSpec {
    ColumnSpec {
        name,
        sql_type,
        nullable,
        identifier,
    }
}

use IdType as I;
use SqlType::{BigInt, Boolean, Double, Text, Timestamp};

pub(crate) const CRM: usize = 0;
pub(crate) const SUBSCRIBERS: usize = 1;
pub(crate) const EMAIL_EVENTS: usize = 2;
pub(crate) const WEB: usize = 3;
pub(crate) const LOYALTY: usize = 4;
pub(crate) const POS: usize = 5;
pub(crate) const CONSENT: usize = 6;
pub(crate) const TABLE_COUNT: usize = 7;

static TABLES: [TableSpec; TABLE_COUNT] = [
    TableSpec {
        name: "crm_contacts",
        source: "crm",
        columns: &[
            col("contact_id", Text, false, Some(I::CrmId)),
            col("first_name", Text, true, None),
            col("last_name", Text, true, None),
            col("email", Text, true, Some(I::Email)),
            col("phone", Text, true, Some(I::Phone)),
            col("street", Text, true, None),
            col("city", Text, true, None),
            col("state", Text, true, None),
            col("zip", Text, true, None),
            col("created_at", Timestamp, false, None),
            col("updated_at", Timestamp, false, None),
        ],
    },
    TableSpec {
        name: "email_subscribers",
        source: "esp",
        columns: &[
            col("subscriber_id", Text, false, Some(I::EspId)),
            col("email", Text, true, Some(I::Email)),
            col("subscribed_at", Timestamp, false, None),
            col("status", Text, false, None),
            col("unsubscribed_at", Timestamp, true, None),
        ],
    },
    TableSpec {
        name: "email_events",
        source: "esp",
        columns: &[
            col("email", Text, true, Some(I::Email)),
            col("event_type", Text, false, None),
            col("campaign_id", Text, false, None),
            col("occurred_at", Timestamp, false, None),
        ],
    },
    TableSpec {
        name: "web_events",
        source: "web",
        columns: &[
            col("cookie_id", Text, false, Some(I::Cookie)),
            col("user_id", Text, true, Some(I::UserId)),
            col("email", Text, true, Some(I::Email)),
            col("event_type", Text, false, None),
            col("url", Text, false, None),
            col("occurred_at", Timestamp, false, None),
        ],
    },
    TableSpec {
        name: "loyalty_members",
        source: "loyalty",
        columns: &[
            col("member_id", Text, false, Some(I::LoyaltyId)),
            col("email", Text, true, Some(I::Email)),
            col("phone", Text, true, Some(I::Phone)),
            col("first_name", Text, true, None),
            col("last_name", Text, true, None),
            col("tier", Text, false, None),
            col("points", BigInt, false, None),
            col("joined_at", Timestamp, false, None),
            col("updated_at", Timestamp, false, None),
        ],
    },
    TableSpec {
        name: "pos_orders",
        source: "pos",
        columns: &[
            col("order_id", Text, false, None),
            col("loyalty_id", Text, true, Some(I::LoyaltyId)),
            col("phone", Text, true, Some(I::Phone)),
            col("store_id", Text, false, None),
            col("amount", Double, false, None),
            col("ordered_at", Timestamp, false, None),
        ],
    },
    TableSpec {
        name: "consent_events",
        source: "consent",
        columns: &[
            col("email", Text, true, Some(I::Email)),
            col("purpose", Text, false, None),
            col("granted", Boolean, false, None),
            col("occurred_at", Timestamp, false, None),
        ],
    },
];

/// Every generated table, in file-writing order.
pub fn tables() -> &'static [TableSpec] {
    &TABLES
}

/// The table named `name`, if any.
pub fn table(name: &str) -> Option<&'static TableSpec> {
    TABLES.iter().find(|t| t.name == name)
}

/// `CREATE TABLE name (col TYPE, ...)` for a table. Columns that are never
/// NULL get `NOT NULL`.
pub fn create_table_sql(table: &TableSpec) -> String {
    let mut s = format!("CREATE TABLE {} (", table.name);
    for (i, c) in table.columns.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(c.name);
        s.push(' ');
        s.push_str(c.sql_type.as_sql());
        if !c.nullable {
            s.push_str(" NOT NULL");
        }
    }
    s.push(')');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_consistent() {
        assert_eq!(tables().len(), TABLE_COUNT);
        assert_eq!(tables()[CRM].name, "crm_contacts");
        assert_eq!(tables()[CONSENT].name, "consent_events");
        let sql = create_table_sql(table("pos_orders").expect("table"));
        assert_eq!(
            sql,
            "CREATE TABLE pos_orders (order_id TEXT NOT NULL, loyalty_id TEXT, phone TEXT, \
             store_id TEXT NOT NULL, amount DOUBLE NOT NULL, ordered_at TIMESTAMP NOT NULL)"
        );
        let ids: Vec<_> = table("web_events")
            .expect("table")
            .identifier_columns()
            .collect();
        assert_eq!(
            ids,
            vec![
                ("cookie_id", IdType::Cookie),
                ("user_id", IdType::UserId),
                ("email", IdType::Email)
            ]
        );
        // Every identifier type is used somewhere.
        for t in IdType::ALL {
            assert!(
                tables()
                    .iter()
                    .any(|s| s.identifier_columns().any(|(_, it)| it == t)),
                "{t}"
            );
        }
    }
}

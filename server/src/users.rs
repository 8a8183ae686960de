//! Users and passwords, managed by SQL (`CREATE USER name [WITH] PASSWORD
//! '...'`, `ALTER USER name [WITH] PASSWORD '...'`, `DROP USER [IF EXISTS]
//! name`) and checked with SCRAM-SHA-256.
//!
//! A user is kept in the database's metadata as its SCRAM salt and salted
//! password (never the password itself). While no user exists, loopback
//! connections are trusted; once one exists, every connection must
//! authenticate.

use std::io::Read;
use std::sync::Arc;

use async_trait::async_trait;
use pgwire::api::auth::sasl::scram::gen_salted_password;
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use serde::{Deserialize, Serialize};
use tessera::Database;

const KEY_PREFIX: &str = "user/";
pub const SCRAM_ITERATIONS: usize = 4096;
const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Serialize, Deserialize)]
struct StoredUser {
    salt: Vec<u8>,
    iterations: usize,
    salted_password: Vec<u8>,
}

/// A user statement, recognised before the SQL engine sees the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserStatement {
    Create { name: String, password: String },
    Alter { name: String, password: String },
    Drop { name: String, if_exists: bool },
}

pub fn any_user(db: &Database) -> bool {
    db.store().snapshot().metadata().keys().any(|k| k.starts_with(KEY_PREFIX))
}

fn user_exists(db: &Database, name: &str) -> bool {
    db.store().snapshot().metadata().contains_key(&format!("{KEY_PREFIX}{name}"))
}

fn random_salt() -> std::io::Result<Vec<u8>> {
    let mut salt = vec![0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut salt)?;
    Ok(salt)
}

/// Run a user statement; returns the command tag.
pub async fn execute(db: &Database, statement: &UserStatement) -> tessera::Result<&'static str> {
    let store = db.store().clone();
    let (key, value, tag) = match statement {
        UserStatement::Create { name, password } | UserStatement::Alter { name, password } => {
            let creating = matches!(statement, UserStatement::Create { .. });
            if creating && user_exists(db, name) {
                return Err(tessera::Error::User(format!("role \"{name}\" already exists")));
            }
            if !creating && !user_exists(db, name) {
                return Err(tessera::Error::User(format!("role \"{name}\" does not exist")));
            }
            if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
                return Err(tessera::Error::User(format!("a password must have between 1 and {MAX_PASSWORD_BYTES} bytes")));
            }
            let salt = random_salt().map_err(|e| tessera::Error::Io(format!("reading random bytes: {e}")))?;
            let salted_password = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
            let stored = StoredUser { salt, iterations: SCRAM_ITERATIONS, salted_password };
            let json = serde_json::to_string(&stored).map_err(|e| tessera::Error::Internal(e.to_string()))?;
            (format!("{KEY_PREFIX}{name}"), Some(json), if creating { "CREATE ROLE" } else { "ALTER ROLE" })
        }
        UserStatement::Drop { name, if_exists } => {
            if !user_exists(db, name) {
                if *if_exists {
                    return Ok("DROP ROLE");
                }
                return Err(tessera::Error::User(format!("role \"{name}\" does not exist")));
            }
            (format!("{KEY_PREFIX}{name}"), None, "DROP ROLE")
        }
    };
    tokio::task::spawn_blocking(move || store.set_metadata(&key, value))
        .await
        .map_err(|e| tessera::Error::Internal(e.to_string()))??;
    Ok(tag)
}

/// Recognise `CREATE USER|ROLE`, `ALTER USER|ROLE ... PASSWORD` and
/// `DROP USER|ROLE`. `None` when the text is something else.
pub fn parse(sql: &str) -> tessera::Result<Option<UserStatement>> {
    use tessera::sql::sqlparser::dialect::PostgreSqlDialect;
    use tessera::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let head = sql.trim_start().to_ascii_uppercase();
    if !["CREATE USER", "CREATE ROLE", "ALTER USER", "ALTER ROLE", "DROP USER", "DROP ROLE"].iter().any(|p| head.starts_with(p)) {
        return Ok(None);
    }
    let syntax = |m: &str| tessera::Error::Syntax { message: m.to_string(), line: None, column: None };
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().map_err(|e| syntax(&e.to_string()))?;
    let words: Vec<Token> = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon | Token::EOF))
        .collect();
    let word = |i: usize| match words.get(i) {
        Some(Token::Word(w)) => Some(w.value.to_ascii_uppercase()),
        _ => None,
    };
    let ident = |i: usize| match words.get(i) {
        Some(Token::Word(w)) if w.quote_style.is_some() => Some(w.value.clone()),
        Some(Token::Word(w)) => Some(w.value.to_lowercase()),
        _ => None,
    };
    let verb = word(0).unwrap_or_default();
    if verb == "DROP" {
        let (if_exists, at) = if word(2).as_deref() == Some("IF") && word(3).as_deref() == Some("EXISTS") { (true, 4) } else { (false, 2) };
        let name = ident(at).ok_or_else(|| syntax("DROP USER needs a name"))?;
        if words.len() != at + 1 {
            return Err(syntax("DROP USER takes one name"));
        }
        return Ok(Some(UserStatement::Drop { name, if_exists }));
    }
    let name = ident(2).ok_or_else(|| syntax("expected a user name"))?;
    let mut at = 3;
    if word(at).as_deref() == Some("WITH") {
        at += 1;
    }
    let mut password = None;
    while at < words.len() {
        match (word(at).as_deref(), words.get(at + 1)) {
            (Some("PASSWORD"), Some(Token::SingleQuotedString(p))) => {
                password = Some(p.clone());
                at += 2;
            }
            (Some("LOGIN") | Some("NOSUPERUSER") | Some("SUPERUSER") | Some("INHERIT"), _) => at += 1,
            _ => return Err(syntax("expected PASSWORD 'password' (other role options are not supported)")),
        }
    }
    let password = password.ok_or_else(|| syntax("a user needs PASSWORD 'password'"))?;
    Ok(Some(if verb == "CREATE" { UserStatement::Create { name, password } } else { UserStatement::Alter { name, password } }))
}

/// Looks passwords up for SCRAM; an unknown user fails exactly like a wrong
/// password, so the reply tells nothing about which users exist.
#[derive(Debug)]
pub struct Users {
    pub db: Database,
}

impl std::fmt::Debug for StoredUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredUser { .. }")
    }
}

fn auth_failed(user: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        "28P01".into(),
        format!("password authentication failed for user \"{user}\""),
    )))
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default().to_string();
        let snap = self.db.store().snapshot();
        let Some(json) = snap.metadata().get(&format!("{KEY_PREFIX}{user}")) else {
            // Answer with a random salt so an unknown user looks like a wrong password.
            let salt = random_salt().map_err(|_| auth_failed(&user))?;
            return Ok(Password::new(Some(salt), vec![0u8; 32]));
        };
        let stored: StoredUser = serde_json::from_str(json).map_err(|_| auth_failed(&user))?;
        Ok(Password::new(Some(stored.salt), stored.salted_password))
    }
}

pub fn scram(db: &Database) -> pgwire::api::auth::sasl::scram::ScramAuth {
    let mut scram = pgwire::api::auth::sasl::scram::ScramAuth::new(Arc::new(Users { db: db.clone() }));
    scram.set_iterations(SCRAM_ITERATIONS);
    scram
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_statements_parse() {
        assert_eq!(
            parse("CREATE USER anna WITH PASSWORD 'secret'").ok().flatten(),
            Some(UserStatement::Create { name: "anna".into(), password: "secret".into() })
        );
        assert_eq!(
            parse("alter role \"Ben\" password 'x'").ok().flatten(),
            Some(UserStatement::Alter { name: "Ben".into(), password: "x".into() })
        );
        assert_eq!(parse("DROP USER IF EXISTS anna").ok().flatten(), Some(UserStatement::Drop { name: "anna".into(), if_exists: true }));
        assert!(parse("CREATE USER anna").is_err());
        assert!(parse("CREATE USER anna WITH CREATEDB PASSWORD 'x'").is_err());
        assert_eq!(parse("SELECT 1").ok().flatten(), None);
    }
}

//! Generator configuration. Every rate is a probability in [0, 1] unless
//! stated otherwise; the defaults are documented on each field and in
//! `docs/generator.md`.

use std::str::FromStr;

use crate::time::{timestamp, DAY};
use crate::Error;

/// Which file formats to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Formats {
    pub csv: bool,
    pub parquet: bool,
}

impl Formats {
    pub const CSV: Formats = Formats {
        csv: true,
        parquet: false,
    };
    pub const PARQUET: Formats = Formats {
        csv: false,
        parquet: true,
    };
    pub const BOTH: Formats = Formats {
        csv: true,
        parquet: true,
    };
}

impl FromStr for Formats {
    type Err = Error;

    /// `csv`, `parquet` or `both`.
    fn from_str(s: &str) -> Result<Formats, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(Formats::CSV),
            "parquet" => Ok(Formats::PARQUET),
            "both" => Ok(Formats::BOTH),
            other => Err(Error::InvalidConfig(format!(
                "unknown format {other:?}: expected csv, parquet or both"
            ))),
        }
    }
}

/// Noise applied to values as each source records them.
#[derive(Clone, Debug, PartialEq)]
pub struct Noise {
    /// An e-mail is written with changed letter case (Title.Case local part,
    /// upper-cased domain, or all caps). Default 0.10.
    pub email_case_rate: f64,
    /// An e-mail gets leading and/or trailing whitespace. Default 0.03.
    pub email_whitespace_rate: f64,
    /// Relative weights of the phone formats `(650) 555-1212`,
    /// `650-555-1212`, `650.555.1212`, `+1 650 555 1212`, `6505551212`,
    /// `+16505551212`. Default `[0.22, 0.25, 0.10, 0.13, 0.25, 0.05]`.
    pub phone_format_weights: [f64; 6],
    /// A first name is recorded as one of its nicknames (Robert -> Bob),
    /// when it has one. Default 0.10.
    pub nickname_rate: f64,
    /// A name field gets a single-character typo (substitution, deletion,
    /// insertion or transposition). Default 0.02.
    pub name_typo_rate: f64,
    /// A name field is written in upper or lower case. Default 0.03.
    pub name_case_rate: f64,
    /// A human-entered identifier field (e-mail, phone) holds a junk value
    /// (`test@test.com`, `0000000000`, `n/a`, `undefined`, empty, ...).
    /// Default 0.01.
    pub junk_rate: f64,
    /// Street suffixes are abbreviated (`Street` -> `St`/`St.`). Default 0.4.
    pub street_abbreviation_rate: f64,
}

impl Default for Noise {
    fn default() -> Noise {
        Noise {
            email_case_rate: 0.10,
            email_whitespace_rate: 0.03,
            phone_format_weights: [0.22, 0.25, 0.10, 0.13, 0.25, 0.05],
            nickname_rate: 0.10,
            name_typo_rate: 0.02,
            name_case_rate: 0.03,
            junk_rate: 0.01,
            street_abbreviation_rate: 0.4,
        }
    }
}

/// Buy-till-you-die purchase model (BG/NBD with Gamma-Gamma spend). Times are
/// in days.
#[derive(Clone, Debug, PartialEq)]
pub struct Btyd {
    /// Purchase rate while alive: lambda ~ Gamma(shape r, rate alpha)
    /// purchases per day; mean r / alpha. Default r = 0.9.
    pub rate_shape: f64,
    /// Default alpha = 35 (mean rate 0.026/day, about 9.4 purchases a year).
    pub rate_rate: f64,
    /// Dropout probability after each purchase: p ~ Beta(a, b).
    /// Default a = 1.6.
    pub dropout_a: f64,
    /// Default b = 8.0 (mean dropout probability 1/6).
    pub dropout_b: f64,
    /// Amount of one purchase ~ Gamma(shape p, rate nu) with the customer's
    /// nu ~ Gamma(shape q, rate gamma); mean spend p * gamma / (q - 1).
    /// Default p = 6.
    pub spend_p: f64,
    /// Default q = 4.
    pub spend_q: f64,
    /// Default gamma = 30 (mean purchase $60).
    pub spend_gamma: f64,
}

impl Default for Btyd {
    fn default() -> Btyd {
        Btyd {
            rate_shape: 0.9,
            rate_rate: 35.0,
            dropout_a: 1.6,
            dropout_b: 8.0,
            spend_p: 6.0,
            spend_q: 4.0,
            spend_gamma: 30.0,
        }
    }
}

/// Everything that determines the generated data. The same `Config` always
/// produces byte-identical files.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Number of persons (ground-truth identities), anonymous visitors
    /// included. Default 10 000.
    pub people: u64,
    /// Random seed. Default 42.
    pub seed: u64,
    /// Worker threads for generation; 0 = available parallelism. Does not
    /// change the output.
    pub threads: usize,

    /// End of the observation window (Unix seconds, UTC). Default
    /// 2026-11-01 00:00:00.
    pub window_end: i64,
    /// Length of the observation window in days. Default 730 (two years).
    /// Events and orders fall inside the window.
    pub window_days: u32,
    /// Days before the window in which customers may have been acquired,
    /// subscriptions started and accounts created. Default 365.
    pub history_days: u32,

    /// Fraction of persons who are anonymous web visitors (cookies only,
    /// never identified). Default 0.20.
    pub anonymous_rate: f64,
    /// Relative weights of household sizes 1, 2, 3, 4. Default
    /// `[0.55, 0.25, 0.12, 0.08]`.
    pub household_size_weights: [f64; 4],
    /// Multi-person households that share a family device (one cookie used
    /// by all members). Default 0.30.
    pub shared_device_rate: f64,
    /// Fraction of a household member's web sessions on the shared device.
    /// Default 0.35.
    pub shared_device_use: f64,
    /// Members of a household who share its last name. Default 0.85.
    pub household_same_last_name: f64,

    /// Known persons with no e-mail address. Default 0.08.
    pub no_email_rate: f64,
    /// Of persons with e-mail, fraction with exactly two addresses.
    /// Default 0.20.
    pub two_emails_rate: f64,
    /// Of persons with e-mail, fraction with three addresses. Default 0.05.
    pub three_emails_rate: f64,
    /// Known persons with no phone number. Default 0.10.
    pub no_phone_rate: f64,
    /// Of persons with a phone, fraction with two numbers. Default 0.15.
    pub two_phones_rate: f64,
    /// Of persons with a phone, fraction with three numbers. Default 0.03.
    pub three_phones_rate: f64,
    /// Relative weights of a known person having 1, 2, 3 or 4 own browser
    /// cookies (devices). Default `[0.50, 0.30, 0.15, 0.05]`.
    pub cookie_count_weights: [f64; 4],

    /// Known persons with a CRM record. Default 0.60.
    pub crm_rate: f64,
    /// CRM persons with a second (duplicate) record carrying a different
    /// e-mail or phone. Default 0.03.
    pub crm_duplicate_rate: f64,
    /// Persons with e-mail who subscribe to the newsletter with their main
    /// address. Default 0.55.
    pub subscriber_rate: f64,
    /// Subscribers who also subscribe each further address. Default 0.25.
    pub extra_subscription_rate: f64,
    /// Subscriptions that end unsubscribed. Default 0.15.
    pub unsubscribe_rate: f64,
    /// Subscriptions (and web accounts) that started before the window.
    /// Default 0.40.
    pub pre_window_rate: f64,
    /// Persons with e-mail who have a web-site account (user id). Default 0.50.
    pub account_rate: f64,
    /// Known persons who buy in stores at all. Default 0.85.
    pub store_customer_rate: f64,
    /// Store customers who join the loyalty programme (at their first
    /// purchase). Default 0.45.
    pub loyalty_rate: f64,

    /// Mean web events per known person over the window. Default 20.
    pub web_events_per_person: f64,
    /// Mean web events per anonymous visitor. Default 6.
    pub anonymous_web_events: f64,
    /// Mean events per web session. Default 4.
    pub events_per_session: f64,
    /// Sessions of account holders that log in. Default 0.30.
    pub login_rate: f64,
    /// Mean e-mail events (opens and clicks) per known person. Default 5.
    pub email_events_per_person: f64,
    /// Opens that lead to a click. Default 0.20.
    pub click_rate: f64,
    /// Days between e-mail campaigns. Default 3.5 (two a week).
    pub campaign_interval_days: f64,

    /// Number of stores. Default 40.
    pub store_count: u32,
    /// Orders with neither loyalty id nor phone. Default 0.15.
    pub guest_checkout_rate: f64,
    /// Orders of loyalty members (after joining) that carry the loyalty id.
    /// Default 0.90.
    pub loyalty_id_usage: f64,
    /// Orders keyed by a phone where the cashier typed the store's own
    /// phone number instead of the customer's (the shared-phone hub).
    /// Default 0.03.
    pub store_phone_rate: f64,
    /// Number of distinct store phone numbers used that way. Default 3.
    pub store_phones: u32,

    /// Initial grant probability per consent purpose for `email_marketing`
    /// (non-subscribers; subscribers always grant), `ads_personalization`,
    /// `analytics`. Default `[0.30, 0.50, 0.70]`.
    pub consent_grant_rates: [f64; 3],
    /// Granted consents withdrawn later in the window. Default 0.10.
    pub consent_withdraw_rate: f64,
    /// Withdrawn consents granted again later. Default 0.20.
    pub consent_regrant_rate: f64,

    /// Value noise.
    pub noise: Noise,
    /// Purchase model.
    pub btyd: Btyd,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            people: 10_000,
            seed: 42,
            threads: 0,
            window_end: timestamp(2026, 11, 1),
            window_days: 730,
            history_days: 365,
            anonymous_rate: 0.20,
            household_size_weights: [0.55, 0.25, 0.12, 0.08],
            shared_device_rate: 0.30,
            shared_device_use: 0.35,
            household_same_last_name: 0.85,
            no_email_rate: 0.08,
            two_emails_rate: 0.20,
            three_emails_rate: 0.05,
            no_phone_rate: 0.10,
            two_phones_rate: 0.15,
            three_phones_rate: 0.03,
            cookie_count_weights: [0.50, 0.30, 0.15, 0.05],
            crm_rate: 0.60,
            crm_duplicate_rate: 0.03,
            subscriber_rate: 0.55,
            extra_subscription_rate: 0.25,
            unsubscribe_rate: 0.15,
            pre_window_rate: 0.40,
            account_rate: 0.50,
            store_customer_rate: 0.85,
            loyalty_rate: 0.45,
            web_events_per_person: 20.0,
            anonymous_web_events: 6.0,
            events_per_session: 4.0,
            login_rate: 0.30,
            email_events_per_person: 5.0,
            click_rate: 0.20,
            campaign_interval_days: 3.5,
            store_count: 40,
            guest_checkout_rate: 0.15,
            loyalty_id_usage: 0.90,
            store_phone_rate: 0.03,
            store_phones: 3,
            consent_grant_rates: [0.30, 0.50, 0.70],
            consent_withdraw_rate: 0.10,
            consent_regrant_rate: 0.20,
            noise: Noise::default(),
            btyd: Btyd::default(),
        }
    }
}

impl Config {
    /// A default configuration for `people` persons and `seed`.
    pub fn new(people: u64, seed: u64) -> Config {
        Config {
            people,
            seed,
            ..Config::default()
        }
    }

    /// Start of the observation window (Unix seconds).
    pub fn window_start(&self) -> i64 {
        self.window_end - i64::from(self.window_days) * DAY
    }

    /// Checks that every parameter is in range.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::InvalidConfig(what.to_string()));
        let rates: [(&str, f64); 35] = [
            ("anonymous_rate", self.anonymous_rate),
            ("shared_device_rate", self.shared_device_rate),
            ("shared_device_use", self.shared_device_use),
            ("household_same_last_name", self.household_same_last_name),
            ("no_email_rate", self.no_email_rate),
            ("two_emails_rate", self.two_emails_rate),
            ("three_emails_rate", self.three_emails_rate),
            ("no_phone_rate", self.no_phone_rate),
            ("two_phones_rate", self.two_phones_rate),
            ("three_phones_rate", self.three_phones_rate),
            ("crm_rate", self.crm_rate),
            ("crm_duplicate_rate", self.crm_duplicate_rate),
            ("subscriber_rate", self.subscriber_rate),
            ("extra_subscription_rate", self.extra_subscription_rate),
            ("unsubscribe_rate", self.unsubscribe_rate),
            ("pre_window_rate", self.pre_window_rate),
            ("account_rate", self.account_rate),
            ("store_customer_rate", self.store_customer_rate),
            ("loyalty_rate", self.loyalty_rate),
            ("login_rate", self.login_rate),
            ("click_rate", self.click_rate),
            ("guest_checkout_rate", self.guest_checkout_rate),
            ("loyalty_id_usage", self.loyalty_id_usage),
            ("store_phone_rate", self.store_phone_rate),
            ("consent_grant_rates[0]", self.consent_grant_rates[0]),
            ("consent_grant_rates[1]", self.consent_grant_rates[1]),
            ("consent_grant_rates[2]", self.consent_grant_rates[2]),
            ("consent_withdraw_rate", self.consent_withdraw_rate),
            ("consent_regrant_rate", self.consent_regrant_rate),
            ("noise.email_case_rate", self.noise.email_case_rate),
            (
                "noise.email_whitespace_rate",
                self.noise.email_whitespace_rate,
            ),
            ("noise.nickname_rate", self.noise.nickname_rate),
            ("noise.name_typo_rate", self.noise.name_typo_rate),
            ("noise.name_case_rate", self.noise.name_case_rate),
            ("noise.junk_rate", self.noise.junk_rate),
        ];
        for (name, r) in rates {
            if !(0.0..=1.0).contains(&r) {
                return bad(&format!("{name} must be in [0, 1], got {r}"));
            }
        }
        if !(0.0..=1.0).contains(&self.noise.street_abbreviation_rate) {
            return bad("noise.street_abbreviation_rate must be in [0, 1]");
        }
        if self.two_emails_rate + self.three_emails_rate > 1.0 {
            return bad("two_emails_rate + three_emails_rate must be at most 1");
        }
        if self.two_phones_rate + self.three_phones_rate > 1.0 {
            return bad("two_phones_rate + three_phones_rate must be at most 1");
        }
        let weights_ok =
            |w: &[f64]| w.iter().all(|x| x.is_finite() && *x >= 0.0) && w.iter().sum::<f64>() > 0.0;
        if !weights_ok(&self.household_size_weights) {
            return bad("household_size_weights must be non-negative with a positive sum");
        }
        if !weights_ok(&self.cookie_count_weights) {
            return bad("cookie_count_weights must be non-negative with a positive sum");
        }
        if !weights_ok(&self.noise.phone_format_weights) {
            return bad("noise.phone_format_weights must be non-negative with a positive sum");
        }
        if self.window_days == 0 || self.window_days > 3650 {
            return bad("window_days must be between 1 and 3650");
        }
        if !(timestamp(1000, 1, 1)..=timestamp(9999, 1, 1)).contains(&self.window_end) {
            return bad("window_end must be between the years 1000 and 9999");
        }
        if self.history_days > 3650 {
            return bad("history_days must be at most 3650");
        }
        let volumes = [
            ("web_events_per_person", self.web_events_per_person),
            ("anonymous_web_events", self.anonymous_web_events),
            ("email_events_per_person", self.email_events_per_person),
        ];
        for (name, v) in volumes {
            if !(v.is_finite() && (0.0..=1000.0).contains(&v)) {
                return bad(&format!("{name} must be between 0 and 1000, got {v}"));
            }
        }
        if !(self.events_per_session.is_finite()
            && (1.0..=100.0).contains(&self.events_per_session))
        {
            return bad("events_per_session must be between 1 and 100");
        }
        if !(self.campaign_interval_days.is_finite() && self.campaign_interval_days >= 0.01) {
            return bad("campaign_interval_days must be at least 0.01");
        }
        if self.store_count == 0 || self.store_count > 99_999 {
            return bad("store_count must be between 1 and 99999");
        }
        if self.store_phones == 0 || self.store_phones > 1000 {
            return bad("store_phones must be between 1 and 1000");
        }
        let b = &self.btyd;
        for (name, v) in [
            ("btyd.rate_shape", b.rate_shape),
            ("btyd.rate_rate", b.rate_rate),
            ("btyd.dropout_a", b.dropout_a),
            ("btyd.dropout_b", b.dropout_b),
            ("btyd.spend_p", b.spend_p),
            ("btyd.spend_q", b.spend_q),
            ("btyd.spend_gamma", b.spend_gamma),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(&format!("{name} must be positive, got {v}"));
            }
        }
        if b.rate_shape / b.rate_rate > 1.0 {
            return bad(
                "btyd mean purchase rate (rate_shape / rate_rate) must be at most 1 per day",
            );
        }
        if self.people > crate::gen::MAX_PEOPLE {
            return bad(&format!(
                "people must be at most {}",
                crate::gen::MAX_PEOPLE
            ));
        }
        Ok(())
    }
}

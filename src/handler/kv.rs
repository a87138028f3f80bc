//! `log`'s key-values (`log::info!(user = "ann", attempts = 3; "login")`), captured on
//! the producer path into the typed field encoding ([`crate::record::fields`]), the
//! same one tracing's fields use: numbers, bools and strings stored as such, anything
//! else formatted with `Display` into ring space. No allocation, no lock.

use log::kv::{Error, Key, Value, VisitSource, VisitValue};

use super::message::MessageBuf;
use crate::record::fields::Encoder;

/// Encodes every key-value of `record`.
pub(crate) fn encode(record: &log::Record<'_>, encoder: &mut Encoder<'_, MessageBuf<'_>>) {
    // Errors come only from our own visitors, which never fail.
    let _ = record.key_values().visit(&mut Pairs { encoder });
}

struct Pairs<'e, 's, 'p> {
    encoder: &'e mut Encoder<'s, MessageBuf<'p>>,
}

impl<'kvs> VisitSource<'kvs> for Pairs<'_, '_, '_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), Error> {
        let name = key.as_str();
        let mut typed = Typed {
            encoder: self.encoder,
            name,
            value: &value,
        };
        let _ = value.visit(&mut typed);
        Ok(())
    }
}

/// Stores one value by its type.
struct Typed<'e, 's, 'p, 'n, 'v> {
    encoder: &'e mut Encoder<'s, MessageBuf<'p>>,
    name: &'n str,
    /// The value itself, for the types stored as text.
    value: &'v Value<'v>,
}

impl<'v> VisitValue<'v> for Typed<'_, '_, '_, '_, '_> {
    fn visit_any(&mut self, _: Value<'_>) -> Result<(), Error> {
        self.encoder.display(self.name, self.value);
        Ok(())
    }

    fn visit_null(&mut self) -> Result<(), Error> {
        self.encoder.display(self.name, &"null");
        Ok(())
    }

    fn visit_u64(&mut self, value: u64) -> Result<(), Error> {
        self.encoder.u64(self.name, value);
        Ok(())
    }

    fn visit_i64(&mut self, value: i64) -> Result<(), Error> {
        self.encoder.i64(self.name, value);
        Ok(())
    }

    fn visit_u128(&mut self, value: u128) -> Result<(), Error> {
        self.encoder.u128(self.name, value);
        Ok(())
    }

    fn visit_i128(&mut self, value: i128) -> Result<(), Error> {
        self.encoder.i128(self.name, value);
        Ok(())
    }

    fn visit_f64(&mut self, value: f64) -> Result<(), Error> {
        self.encoder.f64(self.name, value);
        Ok(())
    }

    fn visit_bool(&mut self, value: bool) -> Result<(), Error> {
        self.encoder.bool(self.name, value);
        Ok(())
    }

    fn visit_str(&mut self, value: &str) -> Result<(), Error> {
        self.encoder.str(self.name, value);
        Ok(())
    }

    fn visit_char(&mut self, value: char) -> Result<(), Error> {
        let mut buf = [0u8; 4];
        self.encoder.str(self.name, value.encode_utf8(&mut buf));
        Ok(())
    }
}

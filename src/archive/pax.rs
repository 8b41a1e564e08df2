//! PAX records and the tar block: the pieces of the tar format that the
//! writer, the digest and the manifest share.

use std::io::{self, Write};

use tar::{Builder, EntryType, Header};

/// The tar block size: headers and data are padded to it.
pub const TAR_BLOCK: usize = 512;

/// Appends a PAX global header holding one record (the manifest, the digest).
pub fn append_global<W: Write>(
    builder: &mut Builder<W>,
    key: &str,
    value: &[u8],
) -> io::Result<()> {
    let data = record(key, value);
    let mut header = Header::new_ustar();
    header.set_entry_type(EntryType::XGlobalHeader);
    header.set_path("pax_global_header")?;
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, data.as_slice())
}

/// One `"<len> key=value\n"` record, where len counts the whole record.
pub fn record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// The value of `key` in a block of PAX records.
pub fn value<'a>(records: &'a [u8], key: &str) -> Option<&'a [u8]> {
    tar::PaxExtensions::new(records)
        .filter_map(Result::ok)
        .find(|r| r.key() == Ok(key))
        .map(|r| r.value_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let r = record("path", b"a");
        assert_eq!(r, b"9 path=a\n");
        let long = vec![b'x'; 95];
        let r = record("path", &long);
        assert_eq!(r.len().to_string(), String::from_utf8_lossy(&r[..3]));
    }
}

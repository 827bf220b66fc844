use std::sync::Arc;

use super::*;

/// The first flight of a real rustls client asking for `name` (a DNS name) or for an IP
/// address (which sends no SNI).
fn client_hello(name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let server = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("name");
    let mut client = rustls::ClientConnection::new(Arc::new(config), server).expect("client");
    let mut out = Vec::new();
    client.write_tls(&mut out).expect("hello");
    out
}

/// The same handshake message cut into TLS records of at most `size` bytes each.
fn in_records(hello: &[u8], size: usize) -> Vec<u8> {
    let (header, body) = hello.split_at(5);
    let mut out = Vec::new();
    for chunk in body.chunks(size) {
        out.extend_from_slice(&header[..3]);
        out.extend_from_slice(&u16::try_from(chunk.len()).expect("small").to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[test]
fn a_complete_client_hello_gives_its_server_name() {
    let hello = client_hello("api.example.com");
    assert_eq!(parse(&hello), Some(Hello::Sni(Some("api.example.com".into()))));
    assert_eq!(
        parse(&client_hello("10.0.0.1")),
        Some(Hello::Sni(None)),
        "an IP sends no SNI"
    );
}

#[test]
fn an_incomplete_client_hello_asks_for_more_at_every_cut() {
    let hello = client_hello("api.example.com");
    for cut in 1..hello.len() {
        assert_eq!(parse(&hello[..cut]), None, "cut at {cut}");
    }
}

#[test]
fn a_client_hello_fragmented_over_records_is_read_whole() {
    let hello = in_records(&client_hello("api.example.com"), 7);
    assert_eq!(parse(&hello), Some(Hello::Sni(Some("api.example.com".into()))));
}

#[test]
fn garbage_and_oversized_hellos_are_invalid_never_a_panic() {
    assert_eq!(
        parse(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]),
        Some(Hello::Invalid("malformed"))
    );
    // A record longer than TLS allows.
    assert_eq!(
        parse(&[0x16, 0x03, 0x01, 0xff, 0xff, 1]),
        Some(Hello::Invalid("malformed"))
    );
    // A handshake message announcing 60 KiB, sent as full records: more than we hold.
    let mut big = vec![0x01, 0x00, 0xf0, 0x00];
    big.resize(MAX_HELLO + 100, 0);
    let mut records = Vec::new();
    for chunk in big.chunks(16_000) {
        records.extend_from_slice(&[0x16, 0x03, 0x01]);
        records.extend_from_slice(&u16::try_from(chunk.len()).expect("small").to_be_bytes());
        records.extend_from_slice(chunk);
    }
    assert!(
        matches!(parse(&records[..MAX_HELLO]), Some(Hello::Invalid(_))),
        "{:?}",
        parse(&records[..MAX_HELLO])
    );
    // Random bytes after a handshake record header: whatever they are, an answer or more.
    let mut seed = 7u32;
    for _ in 0..2000 {
        let len = 5 + (seed % 300) as usize;
        let mut bytes = vec![0x16, 0x03, 0x01, 0x01, 0x00];
        while bytes.len() < len {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            bytes.push((seed >> 16) as u8);
        }
        let _ = parse(&bytes);
    }
}

//! Download against a local HTTP server on 127.0.0.1 serving archives the tests build; no test
//! contacts a remote host.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cifar_data::{download, Dataset, Error, Format, Source};
use common::{archive, dataset_dir, listing, md5_hex, Raw, ARCHIVE};

/// What the test server sends for the archive's URL.
struct Reply {
    status: u16,
    body: Vec<u8>,
    /// The Content-Length header; larger than the body for a transfer cut short.
    declared: usize,
}

/// Serves `reply` for `/files/cifar-100-binary.tar.gz` (404 for any other path) to a single
/// connection, then stops; gives up on its own after 20 s without one.
fn serve(reply: Reply) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/files", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let handle = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Err(_) => return,
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let line = String::from_utf8_lossy(&request);
        let wanted = line.starts_with(&format!("GET /files/{ARCHIVE} "));
        let (status, body, declared) = if wanted {
            (reply.status, reply.body, reply.declared)
        } else {
            (404, b"not found".to_vec(), 9)
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&body);
    });
    (base, handle)
}

fn ok(body: Vec<u8>) -> Reply {
    let declared = body.len();
    Reply {
        status: 200,
        body,
        declared,
    }
}

fn fetch(root: &Path, reply: Reply, md5: &str) -> cifar_data::Result<PathBuf> {
    let (base_url, server) = serve(reply);
    let source = Source {
        base_url,
        md5: md5.into(),
    };
    let result = download(Format::Cifar100, root, &source);
    server.join().unwrap();
    result
}

#[test]
fn downloads_verifies_and_unpacks() {
    let root = tempfile::tempdir().unwrap();
    let bytes = archive(1, None, &[]);
    let md5 = md5_hex(&bytes).to_uppercase();
    let dir = fetch(root.path(), ok(bytes), &md5).unwrap();
    assert_eq!(dir, root.path().join("cifar-100-binary"));
    assert_eq!(
        listing(root.path()),
        vec!["cifar-100-binary"],
        "no temporary files left"
    );
    let data = Dataset::load(root.path(), Format::Cifar100).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (30, 10));
    let want = tempfile::tempdir().unwrap();
    dataset_dir(want.path(), 1);
    assert_eq!(
        fs::read(dir.join("train.bin")).unwrap(),
        fs::read(want.path().join("train.bin")).unwrap()
    );
}

#[test]
fn a_good_download_replaces_an_existing_dataset() {
    let root = tempfile::tempdir().unwrap();
    dataset_dir(&root.path().join("cifar-100-binary"), 5);
    let bytes = archive(6, None, &[]);
    let md5 = md5_hex(&bytes);
    let dir = fetch(root.path(), ok(bytes), &md5).unwrap();
    let want = tempfile::tempdir().unwrap();
    dataset_dir(want.path(), 6);
    assert_eq!(
        fs::read(dir.join("test.bin")).unwrap(),
        fs::read(want.path().join("test.bin")).unwrap()
    );
    assert_eq!(listing(root.path()), vec!["cifar-100-binary"]);
}

#[test]
fn wrong_checksum_removes_the_download_and_keeps_the_existing_dataset() {
    let root = tempfile::tempdir().unwrap();
    let existing = root.path().join("cifar-100-binary");
    dataset_dir(&existing, 2);
    let before = fs::read(existing.join("train.bin")).unwrap();
    let bytes = archive(3, None, &[]);
    let err = fetch(root.path(), ok(bytes), "0123456789abcdef0123456789abcdef").unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("0123456789abcdef0123456789abcdef") && msg.contains("removed"),
        "{msg}"
    );
    assert_eq!(listing(root.path()), vec!["cifar-100-binary"]);
    assert_eq!(fs::read(existing.join("train.bin")).unwrap(), before);
    assert_eq!(
        listing(&existing),
        vec![
            "coarse_label_names.txt",
            "fine_label_names.txt",
            "test.bin",
            "train.bin"
        ]
    );
    assert!(Dataset::is_complete(&existing, Format::Cifar100));
}

#[test]
fn a_truncated_archive_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let mut bytes = archive(4, None, &[]);
    bytes.truncate(bytes.len() * 2 / 3);
    // The checksum matches the truncated bytes, as if the published file itself were cut short:
    // only unpacking can notice.
    let md5 = md5_hex(&bytes);
    let err = fetch(root.path(), ok(bytes), &md5).unwrap_err();
    assert!(matches!(err, Error::Archive { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(
        listing(root.path()).is_empty(),
        "{:?}",
        listing(root.path())
    );
}

#[test]
fn a_transfer_cut_short_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    let bytes = archive(4, None, &[]);
    let md5 = md5_hex(&bytes);
    let declared = bytes.len();
    let half = bytes[..declared / 2].to_vec();
    let reply = Reply {
        status: 200,
        body: half,
        declared,
    };
    let err = fetch(root.path(), reply, &md5).unwrap_err();
    assert!(matches!(err, Error::Http { .. }), "{err}");
    assert!(listing(root.path()).is_empty());
}

#[test]
fn an_archive_without_every_file_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let bytes = archive(4, Some("test.bin"), &[]);
    let md5 = md5_hex(&bytes);
    let err = fetch(root.path(), ok(bytes), &md5).unwrap_err();
    assert!(matches!(err, Error::Archive { .. }), "{err}");
    assert!(err.to_string().contains("test.bin"), "{err}");
    assert!(listing(root.path()).is_empty());
}

#[test]
fn entries_escaping_the_target_are_refused() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("data");
    let escapee = outer.path().join("evil.txt");
    for name in ["../evil.txt", "cifar-100-binary/../../evil.txt"] {
        let bytes = archive(4, None, &[Raw::file(name, b"pwned")]);
        let md5 = md5_hex(&bytes);
        let err = fetch(&root, ok(bytes), &md5).unwrap_err();
        assert!(matches!(err, Error::UnsafeEntry { .. }), "{name}: {err}");
        assert!(err.to_string().contains("evil.txt"), "{err}");
        assert!(!escapee.exists());
        assert!(listing(&root).is_empty());
    }
    let absolute = outer.path().join("abs.txt");
    let name = absolute.to_str().unwrap().to_string();
    let bytes = archive(4, None, &[Raw::file(&name, b"pwned")]);
    let md5 = md5_hex(&bytes);
    let err = fetch(&root, ok(bytes), &md5).unwrap_err();
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    assert!(!absolute.exists());
}

#[test]
fn an_http_error_status_is_reported() {
    let root = tempfile::tempdir().unwrap();
    let reply = Reply {
        status: 503,
        body: b"busy".to_vec(),
        declared: 4,
    };
    let err = fetch(root.path(), reply, "00").unwrap_err();
    assert!(
        matches!(err, Error::Http { .. }) && err.to_string().contains("503"),
        "{err}"
    );
    assert!(listing(root.path()).is_empty());
}

#[test]
fn an_unreachable_server_says_offline_and_where_to_put_the_files() {
    let root = tempfile::tempdir().unwrap();
    // A port that was just free: nothing listens there any more, so the connection is refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let source = Source {
        base_url: format!("http://127.0.0.1:{port}/files"),
        md5: Format::Cifar100.md5().into(),
    };
    let err = download(Format::Cifar100, root.path(), &source).unwrap_err();
    assert!(matches!(err, Error::Offline { .. }), "{err}");
    let msg = err.to_string();
    let expected = root.path().join("cifar-100-binary").join("train.bin");
    assert!(msg.contains("offline"), "{msg}");
    assert!(
        msg.contains(ARCHIVE) && msg.contains("www.cs.toronto.edu"),
        "{msg}"
    );
    assert!(msg.contains(&expected.display().to_string()), "{msg}");
    let install = format!(
        "trainer download --dataset cifar100 --dir {} --archive FILE",
        root.path().display()
    );
    assert!(msg.contains(&install), "{msg}");
    assert!(listing(root.path()).is_empty());
}

#[test]
fn official_source_points_at_the_home_page() {
    let s = Source::official(Format::Cifar10);
    assert_eq!(
        s.url(Format::Cifar10),
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    );
    assert_eq!(s.md5, "c32a1d4ab5d03f1284b67883e8d87530");
}

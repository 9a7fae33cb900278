//! The configuration reference and the example file stay in step with the code: every
//! key documented with its environment variable and default, every key in the example.

#![allow(clippy::unwrap_used)] // helpers unwrap what the test set up

use std::collections::BTreeMap;
use std::path::PathBuf;

use server::config::{self, Flags};

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// Every key has a row in docs/configuration.md with its environment variable and its
/// default value.
#[test]
fn reference_lists_every_key() {
    let text = std::fs::read_to_string(docs().join("configuration.md")).unwrap();
    for (key, default) in config::default_keys() {
        let (section, name) = key.split_once('.').unwrap();
        let env = format!(
            "`HERALD_{}__{}`",
            section.to_uppercase(),
            name.to_uppercase()
        );
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")) && l.contains(&env))
            .unwrap_or_else(|| panic!("no row for {key} with {env}"));
        assert!(
            row.contains(&format!("`{default}`")),
            "the row of {key} does not show its default `{default}`: {row}"
        );
    }
}

/// The example file names every key in its section, loads as it is, and loads with
/// every value uncommented (but the paths, which name files of the reader's).
#[test]
fn example_lists_every_key_and_loads() {
    let path = docs().join("herald.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    let mut uncommented = String::new();
    for line in text.lines() {
        if let Some(s) = line.strip_prefix('[') {
            current = s.trim_end_matches(']').to_owned();
            uncommented.push_str(line);
            uncommented.push('\n');
            continue;
        }
        if let Some(setting) = line.strip_prefix("# ") {
            if let Some((key, _)) = setting.split_once(" = ") {
                if key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    sections
                        .entry(current.clone())
                        .or_default()
                        .push(key.to_owned());
                    if ![
                        "public_key_file",
                        "client_js",
                        "docs_js",
                        "cert_file",
                        "key_file",
                    ]
                    .contains(&key)
                    {
                        uncommented.push_str(setting);
                        uncommented.push('\n');
                    }
                }
            }
        }
    }
    for key in config::default_keys().keys() {
        let (section, name) = key.split_once('.').unwrap();
        assert!(
            sections
                .get(section)
                .is_some_and(|keys| keys.iter().any(|k| k == name)),
            "{key} is not in the example file"
        );
    }
    let empty: Vec<(String, String)> = Vec::new();
    config::load(Some(&path), empty.clone(), &Flags::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("herald-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let all = dir.join("all.toml");
    std::fs::write(&all, uncommented).unwrap();
    let loaded = config::load(Some(&all), empty, &Flags::default());
    std::fs::remove_dir_all(&dir).unwrap();
    let loaded = loaded.unwrap();
    assert!(loaded.config.auth.enabled());
}

/// Every metric `/metrics` renders is described in docs/operations.md.
#[tokio::test]
async fn operations_lists_every_metric() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The IM store in the temporary directory, not in the source tree.
    let store = std::env::temp_dir().join(format!("herald-docs-{}", std::process::id()));
    let env = vec![(
        "HERALD_IM__STORE".to_owned(),
        format!("sqlite://{}", store.join("herald.db").display()),
    )];
    let loaded = config::load(
        None,
        env,
        &Flags {
            port: Some(0),
            ..Flags::default()
        },
    )
    .unwrap();
    let app = server::start(loaded.config, 1024).await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(app.local_addr())
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    let doc = std::fs::read_to_string(docs().join("operations.md")).unwrap();
    let names: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(names.len() > 30, "{body}");
    for name in names {
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} is not in docs/operations.md"
        );
    }
    app.stop().await;
    let _ = std::fs::remove_dir_all(&store);
}

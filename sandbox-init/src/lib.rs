//! `vana-init`, PID 1 of every vana-sandbox instance, and the protocol to talk to it.
//!
//! The init program (`init/main.rs`) is built by this crate's build script into a static
//! executable and carried here as bytes ([`INIT`]): a backend writes it into a sealed memfd once
//! and `execve`s it as the last step of building each sandbox, so nothing of the host process
//! (argv, environment, memory) is inside, and nothing needs to be installed beside the library.
//! [`protocol`] is the wire format, compiled into both sides; [`serve`] is the serve mode's
//! (`vana-init serve`, the main process of every Docker container), over a byte stream.

pub mod protocol;
pub mod serve;

/// The init executable (static, stripped).
pub const INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vana-init"));

/// The SHA-256 of [`INIT`] (lower-case hex), computed when it was built.
pub const INIT_SHA256: &str = include_str!(concat!(env!("OUT_DIR"), "/vana-init.sha256"));

#[cfg(test)]
mod tests {
    use super::protocol::*;

    #[test]
    fn the_init_binary_is_an_executable() {
        assert!(super::INIT.len() > 1024);
        assert_eq!(&super::INIT[..4], b"\x7fELF");
        use sha2::Digest;
        let digest: String = sha2::Sha256::digest(super::INIT)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(super::INIT_SHA256, digest);
    }

    #[test]
    fn messages_round_trip() {
        let run = HostMessage::Run(Run {
            uid: 1000,
            gid: 1000,
            rlimits: vec![Rlimit {
                resource: 4,
                cur: 0,
                max: 0,
            }],
            cwd: b"/workspace".to_vec(),
            argv: vec![b"/usr/bin/python3".to_vec(), b"main.py".to_vec()],
            arg0: Some(b"/workspace/.vana/venv/bin/python3".to_vec()),
            env: vec![b"PATH=/usr/bin".to_vec(), b"EMPTY=".to_vec()],
        });
        let packet = run.encode().unwrap_or_default();
        assert_eq!(HostMessage::decode(&packet), Ok(run));
        for m in [
            InitMessage::Ready,
            InitMessage::Hello { version: VERSION },
            InitMessage::Exited {
                status: 9,
                rusage: Rusage {
                    utime_us: 1,
                    stime_us: 2,
                    maxrss_kib: 3,
                },
            },
            InitMessage::Failed {
                stage: Stage::Exec as u32,
                index: 0,
                errno: 2,
            },
        ] {
            assert_eq!(InitMessage::decode(&m.encode()), Ok(m));
        }
        assert_eq!(
            HostMessage::decode(&HostMessage::Go.encode().unwrap_or_default()),
            Ok(HostMessage::Go)
        );
    }

    #[test]
    fn the_childs_packets_match_the_encoder() {
        let mut buf = [0u8; 20];
        let n = child::failed(&mut buf, Stage::PivotRoot, 3, 13);
        assert_eq!(
            InitMessage::decode(&buf[..n]),
            Ok(InitMessage::Failed {
                stage: Stage::PivotRoot as u32,
                index: 3,
                errno: 13
            })
        );
        let mut buf = [0u8; 8];
        let n = child::ready(&mut buf);
        assert_eq!(InitMessage::decode(&buf[..n]), Ok(InitMessage::Ready));
        assert!(child::is_go(&HostMessage::Go.encode().unwrap_or_default()));
    }

    #[test]
    fn hostile_packets_are_errors_not_panics() {
        assert_eq!(HostMessage::decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(
            HostMessage::decode(&[9, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::UnknownType(9))
        );
        // A Run that claims more strings than it holds, and one with a string missing its NUL.
        let mut p = vec![1, 0, 0, 0, 21, 0, 0, 0];
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        p.push(b'x');
        assert!(HostMessage::decode(&p).is_err());
        let nul = HostMessage::Run(Run {
            argv: vec![b"a\0b".to_vec()],
            ..Run::default()
        });
        assert_eq!(nul.encode(), Err(DecodeError::BadString));
        let big = HostMessage::Run(Run {
            argv: vec![vec![b'a'; MAX_MESSAGE]],
            ..Run::default()
        });
        assert_eq!(big.encode(), Err(DecodeError::TooLarge));
    }
}

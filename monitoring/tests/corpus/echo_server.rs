// An ordinary Rust program: a TCP echo on localhost, a subprocess, threads, env.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::thread;

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    c.read_exact(&mut back).unwrap();
    server.join().unwrap();
    let out = Command::new("echo").arg("hi").output().unwrap();
    println!(
        "{} {}",
        String::from_utf8_lossy(&back),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let handles: Vec<_> = (0..4).map(|i| thread::spawn(move || i * i)).collect();
    let sum: i32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    println!("{sum} {:?}", std::env::var("HOME").ok());
}

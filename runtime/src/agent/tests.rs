//! The client against a scripted fake agent on an in-memory stream.

use std::time::Duration;

use bytes::Bytes;
use cocoon_proto::{
    read_frame_async, write_frame_async, ErrorBody, ErrorCode, Event, ExitStatus, Frame, Hello,
    Process, Request, Response, Rootfs, Stats, User, CREDIT_BATCH, INITIAL_WINDOW,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

use super::*;

const T: Duration = Duration::from_secs(5);

struct FakeAgent {
    r: ReadHalf<DuplexStream>,
    w: WriteHalf<DuplexStream>,
}

impl FakeAgent {
    async fn recv(&mut self) -> Frame {
        tokio::time::timeout(T, read_frame_async(&mut self.r))
            .await
            .expect("fake agent waited too long")
            .expect("valid frame")
            .expect("not EOF")
    }

    /// The next frame if one arrives within `d`.
    async fn recv_within(&mut self, d: Duration) -> Option<Frame> {
        match tokio::time::timeout(d, read_frame_async(&mut self.r)).await {
            Ok(f) => f.expect("valid frame"),
            Err(_) => None,
        }
    }

    async fn send(&mut self, f: Frame) {
        write_frame_async(&mut self.w, &f).await.expect("send");
    }

    async fn recv_request(&mut self) -> (u32, Request) {
        match self.recv().await {
            Frame::Request { id, request } => (id, request),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    async fn answer(&mut self, id: u32, r: Response) {
        self.send(Frame::Response { id, result: Ok(r) }).await;
    }

    async fn accept_hello(&mut self) {
        match self.recv().await {
            Frame::Hello(h) => assert_eq!((h.min_version, h.version), (1, 1)),
            other => panic!("expected Hello, got {other:?}"),
        }
        self.send(Frame::Hello(Hello {
            version: 1,
            min_version: 1,
            agent: Some("fake".into()),
        }))
        .await;
    }
}

fn fake_pair() -> (DuplexStream, FakeAgent) {
    let (host, agent) = tokio::io::duplex(4 << 20);
    let (r, w) = tokio::io::split(agent);
    (host, FakeAgent { r, w })
}

async fn connected() -> (AgentClient, FakeAgent) {
    let (host, mut fake) = fake_pair();
    let (client, ()) = tokio::join!(AgentClient::handshake(host, T), fake.accept_hello());
    (client.expect("handshake"), fake)
}

fn process(terminal: bool) -> Process {
    Process {
        args: vec!["/bin/cat".into()],
        env: vec![],
        cwd: "/".into(),
        user: User::default(),
        rlimits: vec![],
        terminal,
        console_size: None,
        no_new_privileges: false,
        capabilities: None,
    }
}

/// Answers an `Exec` and returns its stream ids.
async fn accept_exec(fake: &mut FakeAgent) -> (Option<u32>, Option<u32>, Option<u32>) {
    let (id, req) = fake.recv_request().await;
    let Request::Exec {
        stdin,
        stdout,
        stderr,
        ..
    } = req
    else {
        panic!("expected exec, got {req:?}");
    };
    fake.answer(id, Response::Started { pid: 42 }).await;
    (stdin, stdout, stderr)
}

#[tokio::test]
async fn handshake_then_create_container() {
    let (client, mut fake) = connected().await;
    assert_eq!(client.protocol_version(), 1);
    assert_eq!(client.agent_name(), Some("fake"));
    let call = client.create_container(
        "c1",
        Rootfs {
            image: "/dev/vda".into(),
            image_fstype: "erofs".into(),
            scratch: None,
        },
        ContainerSetup {
            hostname: Some("box".into()),
            ..ContainerSetup::default()
        },
    );
    let agent = async {
        let (id, req) = fake.recv_request().await;
        assert!(matches!(
            req,
            Request::CreateContainer { ref container_id, ref hostname, .. }
                if container_id == "c1" && hostname.as_deref() == Some("box")
        ));
        fake.answer(id, Response::Created).await;
    };
    let (r, ()) = tokio::join!(call, agent);
    r.unwrap();
    assert_eq!(client.conn_counts(), (0, 0, 0));
}

impl AgentClient {
    fn conn_counts(&self) -> (usize, usize, usize) {
        self.shared().counts()
    }
}

#[tokio::test]
async fn overlapping_requests_are_matched_by_id() {
    let (client, mut fake) = connected().await;
    let calls = async {
        tokio::join!(
            client.stats("a"),
            client.stats("b"),
            client.stats("c"),
            client.signal("a", "e", 9),
        )
    };
    let agent = async {
        let mut reqs = Vec::new();
        for _ in 0..4 {
            reqs.push(fake.recv_request().await);
        }
        // Answer in reverse order, each with a value naming its container.
        for (id, req) in reqs.into_iter().rev() {
            let r = match req {
                Request::Stats { container_id } => Response::Stats(Stats {
                    pids: u64::from(container_id.as_bytes()[0]),
                    ..Stats::default()
                }),
                Request::Signal { signal: 9, .. } => Response::Done,
                other => panic!("unexpected {other:?}"),
            };
            fake.answer(id, r).await;
        }
    };
    let ((a, b, c, s), ()) = tokio::join!(calls, agent);
    assert_eq!(a.unwrap().pids, u64::from(b'a'));
    assert_eq!(b.unwrap().pids, u64::from(b'b'));
    assert_eq!(c.unwrap().pids, u64::from(b'c'));
    s.unwrap();
}

#[tokio::test]
async fn agent_errors_come_back_typed() {
    let (client, mut fake) = connected().await;
    let agent = async {
        let (id, _) = fake.recv_request().await;
        fake.send(Frame::Response {
            id,
            result: Err(ErrorBody::new(ErrorCode::NotFound, "no container x")),
        })
        .await;
    };
    let (r, ()) = tokio::join!(client.stats("x"), agent);
    match r {
        Err(Error::Agent(b)) => assert_eq!(b.code, ErrorCode::NotFound),
        other => panic!("{other:?}"),
    }
    // A wrong answer type is a protocol error for that call only.
    let agent = async {
        let (id, _) = fake.recv_request().await;
        fake.answer(id, Response::Created).await;
    };
    let (r, ()) = tokio::join!(client.stats("x"), agent);
    assert!(matches!(r, Err(Error::Protocol(_))), "{r:?}");
    assert!(client.is_connected());
}

#[tokio::test]
async fn stdin_writer_waits_for_credit() {
    let (client, mut fake) = connected().await;
    let (exec, ids) = tokio::join!(
        client.exec("c", "e", process(false), Stdio::all()),
        accept_exec(&mut fake)
    );
    let mut exec = exec.unwrap();
    assert_eq!(exec.pid(), 42);
    let stdin_id = ids.0.unwrap();
    let mut stdin = exec.take_stdin().unwrap();
    let total = 3 * INITIAL_WINDOW as usize;
    let writer = tokio::spawn(async move {
        stdin.write_all(&vec![0x5a; total]).await?;
        stdin.close()
    });

    // Exactly one window arrives, then nothing until credit is given.
    let mut got = 0usize;
    while got < INITIAL_WINDOW as usize {
        match fake.recv().await {
            Frame::Data { stream, data } => {
                assert_eq!(stream, stdin_id);
                assert!(data.len() <= CHUNK);
                got += data.len();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, INITIAL_WINDOW as usize);
    assert!(fake.recv_within(Duration::from_millis(200)).await.is_none());
    assert!(!writer.is_finished());

    fake.send(Frame::Credit {
        stream: stdin_id,
        bytes: 2 * INITIAL_WINDOW,
    })
    .await;
    loop {
        match fake.recv().await {
            Frame::Data { data, .. } => got += data.len(),
            Frame::Close { stream } => {
                assert_eq!(stream, stdin_id);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, total);
    writer.await.unwrap().unwrap();
}

#[tokio::test]
async fn stdout_credit_follows_the_consumer() {
    let (client, mut fake) = connected().await;
    let (exec, ids) = tokio::join!(
        client.exec("c", "e", process(false), Stdio::output()),
        accept_exec(&mut fake)
    );
    let mut exec = exec.unwrap();
    assert_eq!(ids.0, None);
    let out_id = ids.1.unwrap();
    let mut stdout = exec.take_stdout().unwrap();

    // The agent fills the whole window; no credit while nobody reads.
    for _ in 0..4 {
        fake.send(Frame::Data {
            stream: out_id,
            data: Bytes::from(vec![1u8; INITIAL_WINDOW as usize / 4]),
        })
        .await;
    }
    assert!(fake.recv_within(Duration::from_millis(100)).await.is_none());

    // Reading returns credit in batches matching what was consumed.
    let mut read = 0usize;
    let mut credited = 0usize;
    while read < INITIAL_WINDOW as usize {
        let chunk = stdout.next_chunk().await.unwrap().unwrap();
        read += chunk.len();
        if let Some(Frame::Credit { stream, bytes }) =
            fake.recv_within(Duration::from_millis(50)).await
        {
            assert_eq!(stream, out_id);
            credited += bytes as usize;
        }
        assert!(credited <= read);
    }
    assert_eq!(read, INITIAL_WINDOW as usize);
    assert_eq!(credited, read);
    assert_eq!(CREDIT_BATCH as usize, INITIAL_WINDOW as usize / 4);

    // Close ends the stream cleanly.
    fake.send(Frame::Data {
        stream: out_id,
        data: Bytes::from_static(b"tail"),
    })
    .await;
    fake.send(Frame::Close { stream: out_id }).await;
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"tail");
    assert_eq!(stdout.next_chunk().await.unwrap(), None);
}

#[tokio::test]
async fn window_overrun_drops_the_connection() {
    let (client, mut fake) = connected().await;
    let (exec, ids) = tokio::join!(
        client.exec("c", "e", process(false), Stdio::output()),
        accept_exec(&mut fake)
    );
    let mut exec = exec.unwrap();
    let out_id = ids.1.unwrap();
    let mut stdout = exec.take_stdout().unwrap();
    let waiter = tokio::spawn({
        let c = client.clone();
        async move { c.wait("c", "e").await }
    });
    let _ = fake.recv_request().await; // the wait
    fake.send(Frame::Data {
        stream: out_id,
        data: Bytes::from(vec![0u8; INITIAL_WINDOW as usize]),
    })
    .await;
    fake.send(Frame::Data {
        stream: out_id,
        data: Bytes::from_static(b"x"),
    })
    .await;
    assert!(matches!(waiter.await.unwrap(), Err(Error::Disconnected)));
    // The window's worth already received may still be read; then the loss.
    let mut n = 0;
    let err = loop {
        match stdout.next_chunk().await {
            Ok(Some(b)) => n += b.len(),
            Ok(None) => panic!("clean end after an overrun"),
            Err(e) => break e,
        }
    };
    assert_eq!(n, INITIAL_WINDOW as usize);
    assert!(matches!(err, Error::Disconnected));
    assert!(client.disconnect_reason().unwrap().contains("credit"));
}

#[tokio::test]
async fn disconnect_mid_request_fails_every_caller() {
    let (client, mut fake) = connected().await;
    let (exec, ids) = tokio::join!(
        client.exec("c", "e", process(false), Stdio::all()),
        accept_exec(&mut fake)
    );
    let mut exec = exec.unwrap();
    let mut stdin = exec.take_stdin().unwrap();
    let mut stdout = exec.take_stdout().unwrap();
    assert!(ids.2.is_some());
    // A writer blocked on credit, a wait and a plain request are all
    // outstanding when the agent goes away.
    let writer = tokio::spawn(async move {
        stdin
            .write_all(&vec![0u8; 2 * INITIAL_WINDOW as usize])
            .await
    });
    let waiter = tokio::spawn({
        let c = client.clone();
        async move { c.wait("c", "e").await }
    });
    let stats = tokio::spawn({
        let c = client.clone();
        async move { c.stats("c").await }
    });
    let mut seen_requests = 0;
    while seen_requests < 2 {
        if let Frame::Request { .. } = fake.recv().await {
            seen_requests += 1;
        }
    }
    drop(fake);
    let all = async {
        (
            writer.await.unwrap(),
            waiter.await.unwrap(),
            stats.await.unwrap(),
            stdout.next_chunk().await,
        )
    };
    let (w, wt, s, o) = tokio::time::timeout(T, all).await.expect("nobody hangs");
    assert!(matches!(w, Err(Error::Disconnected)), "{w:?}");
    assert!(matches!(wt, Err(Error::Disconnected)), "{wt:?}");
    assert!(matches!(s, Err(Error::Disconnected)), "{s:?}");
    assert!(matches!(o, Err(Error::Disconnected)), "{o:?}");
    // Later calls fail at once.
    assert!(matches!(client.stats("c").await, Err(Error::Disconnected)));
    assert!(!client.is_connected());
    // Shutdown of a VM that is already gone is not an error.
    client.shutdown().await.unwrap();
}

#[tokio::test]
async fn unsupported_version_is_a_clear_error() {
    // The agent refuses our range with an Error frame.
    let (host, mut fake) = fake_pair();
    let agent = async {
        let Frame::Hello(h) = fake.recv().await else {
            panic!("expected Hello")
        };
        let e = cocoon_proto::negotiate_version(2, 3, &h).unwrap_err();
        fake.send(Frame::Error(e)).await;
    };
    let (r, ()) = tokio::join!(AgentClient::handshake(host, T), agent);
    match r {
        Err(Error::UnsupportedVersion(m)) => assert!(m.contains("2..=3"), "{m}"),
        other => panic!("{other:?}"),
    }

    // The agent picks a version outside our range.
    let (host, mut fake) = fake_pair();
    let agent = async {
        let _ = fake.recv().await;
        fake.send(Frame::Hello(Hello {
            version: 9,
            min_version: 9,
            agent: None,
        }))
        .await;
    };
    let (r, ()) = tokio::join!(AgentClient::handshake(host, T), agent);
    match r {
        Err(Error::UnsupportedVersion(m)) => assert!(m.contains("version 9"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn garbage_during_handshake_is_a_handshake_error() {
    let (host, mut fake) = fake_pair();
    let agent = async {
        let _ = fake.recv().await;
        fake.w
            .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await
            .unwrap();
    };
    let (r, ()) = tokio::join!(AgentClient::handshake(host, T), agent);
    assert!(matches!(r, Err(Error::Handshake(_))), "{r:?}");

    // Silence is a timeout, not a hang.
    let (host, _fake) = fake_pair();
    let r = AgentClient::handshake(host, Duration::from_millis(100)).await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
}

#[tokio::test]
async fn garbage_after_handshake_disconnects_without_panic() {
    let (client, mut fake) = connected().await;
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.stats("c").await }
    });
    let _ = fake.recv_request().await;
    let mut junk = vec![0u8; 4096];
    let mut x: u32 = 12345;
    for b in &mut junk {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    fake.w.write_all(&junk).await.unwrap();
    let r = tokio::time::timeout(T, call).await.unwrap().unwrap();
    assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
    let reason = client.disconnect_reason().unwrap();
    assert!(reason.contains("invalid frame"), "{reason}");
}

#[tokio::test]
async fn unexpected_frames_from_the_agent_disconnect() {
    let (client, mut fake) = connected().await;
    fake.send(Frame::Request {
        id: 1,
        request: Request::Shutdown,
    })
    .await;
    let r = tokio::time::timeout(T, async {
        loop {
            if !client.is_connected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(r.is_ok());
    assert!(matches!(client.stats("c").await, Err(Error::Disconnected)));
}

#[tokio::test]
async fn request_timeout_and_cancellation_forget_the_request() {
    let (client, mut fake) = connected().await;
    let quick = client
        .clone()
        .with_request_timeout(Duration::from_millis(100));
    let r = quick.stats("c").await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert_eq!(client.conn_counts().0, 0);
    let (late_id, _) = fake.recv_request().await;

    // A dropped call future is forgotten too.
    {
        let fut = client.wait("c", "e");
        let _ = tokio::time::timeout(Duration::from_millis(50), fut).await;
    }
    assert_eq!(client.conn_counts().0, 0);
    let _ = fake.recv_request().await;

    // Late answers are ignored and the connection stays usable.
    fake.answer(late_id, Response::Stats(Stats::default()))
        .await;
    let agent = async {
        let (id, _) = fake.recv_request().await;
        fake.answer(id, Response::Done).await;
    };
    let (r, ()) = tokio::join!(client.signal("c", "e", 15), agent);
    r.unwrap();
}

#[tokio::test]
async fn exec_checks_its_arguments_before_sending() {
    let (client, mut fake) = connected().await;
    let r = client.exec("c", "e", process(true), Stdio::all()).await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    let mut p = process(false);
    p.args.clear();
    let r = client.exec("c", "e", p, Stdio::all()).await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    assert!(fake.recv_within(Duration::from_millis(50)).await.is_none());
    assert_eq!(client.conn_counts(), (0, 0, 0));

    // A terminal exec: the pty is on stdout.
    let (exec, ids) = tokio::join!(
        client.exec(
            "c",
            "t",
            process(true),
            Stdio {
                stdin: true,
                stdout: true,
                stderr: false,
                keep_output: false,
            }
        ),
        accept_exec(&mut fake)
    );
    let exec = exec.unwrap();
    assert!(ids.0.is_some() && ids.1.is_some() && ids.2.is_none());
    let agent = async {
        let (id, req) = fake.recv_request().await;
        assert!(matches!(
            req,
            Request::ResizeTty {
                rows: 50,
                cols: 132,
                ..
            }
        ));
        fake.answer(id, Response::Done).await;
        let (id, req) = fake.recv_request().await;
        assert!(matches!(req, Request::Wait { .. }));
        fake.answer(
            id,
            Response::Exited(ExitStatus {
                code: Some(3),
                signal: None,
                oom_killed: false,
            }),
        )
        .await;
    };
    let client_side = async {
        exec.resize(50, 132).await.unwrap();
        exec.wait().await.unwrap()
    };
    let (status, ()) = tokio::join!(client_side, agent);
    assert_eq!(status.code, Some(3));
}

#[tokio::test]
async fn dropping_a_reader_closes_its_stream() {
    let (client, mut fake) = connected().await;
    let (exec, ids) = tokio::join!(
        client.exec("c", "e", process(false), Stdio::output()),
        accept_exec(&mut fake)
    );
    let mut exec = exec.unwrap();
    drop(exec.take_stderr());
    match fake.recv().await {
        Frame::Close { stream } => assert_eq!(Some(stream), ids.2),
        other => panic!("{other:?}"),
    }
    // Data already in flight for it is dropped quietly.
    fake.send(Frame::Data {
        stream: ids.2.unwrap(),
        data: Bytes::from_static(b"late"),
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(client.is_connected());
}

#[tokio::test]
async fn copy_in_sends_data_then_close_then_waits_for_done() {
    let (client, mut fake) = connected().await;
    let content: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    let expected = content.clone();
    let agent = async {
        let (id, req) = fake.recv_request().await;
        let Request::CopyIn {
            stream, mode, tar, ..
        } = req
        else {
            panic!("{req:?}")
        };
        assert_eq!((mode, tar), (0o640, false));
        let mut got = Vec::new();
        loop {
            match fake.recv().await {
                Frame::Data { data, .. } => {
                    got.extend_from_slice(&data);
                    // Grant as we "write" so the host can go on.
                    fake.send(Frame::Credit {
                        stream,
                        bytes: data.len() as u32,
                    })
                    .await;
                }
                Frame::Close { stream: s } if s == stream => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, expected);
        fake.answer(id, Response::Done).await;
    };
    let (r, ()) = tokio::join!(
        client.copy_in("c", "/tmp/f", false, 0o640, &content[..]),
        agent
    );
    assert_eq!(r.unwrap(), 300_000);
    assert_eq!(client.conn_counts(), (0, 0, 0));
}

#[tokio::test]
async fn copy_in_reports_the_agents_early_error() {
    let (client, mut fake) = connected().await;
    let content = vec![0u8; 1 << 20];
    let agent = async {
        let (id, req) = fake.recv_request().await;
        let Request::CopyIn { stream, .. } = req else {
            panic!("{req:?}")
        };
        fake.send(Frame::Close { stream }).await;
        fake.send(Frame::Response {
            id,
            result: Err(ErrorBody::new(ErrorCode::PermissionDenied, "read-only")),
        })
        .await;
    };
    let (r, ()) = tokio::join!(
        client.copy_in("c", "/ro", false, 0o644, &content[..]),
        agent
    );
    match r {
        Err(Error::Agent(b)) => assert_eq!(b.code, ErrorCode::PermissionDenied),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn copy_out_reads_until_close_and_done() {
    let (client, mut fake) = connected().await;
    let mut out = client.copy_out("c", "/etc/hostname", false).await.unwrap();
    let (id, req) = fake.recv_request().await;
    let Request::CopyOut { stream, .. } = req else {
        panic!("{req:?}")
    };
    // Data first, then the answer after Close: the stream must not end
    // before the answer says the copy worked.
    fake.send(Frame::Data {
        stream,
        data: Bytes::from_static(b"box\n"),
    })
    .await;
    fake.send(Frame::Close { stream }).await;
    let reader = tokio::spawn(async move { out.read_all().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!reader.is_finished());
    fake.answer(id, Response::Done).await;
    assert_eq!(reader.await.unwrap().unwrap(), b"box\n");

    // An error answer ends the stream with that error.
    let mut out = client.copy_out("c", "/nope", true).await.unwrap();
    let (id, _) = fake.recv_request().await;
    fake.send(Frame::Response {
        id,
        result: Err(ErrorBody::new(ErrorCode::NotFound, "/nope")),
    })
    .await;
    match out.next_chunk().await {
        Err(Error::Agent(b)) => assert_eq!(b.code, ErrorCode::NotFound),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn events_reach_the_taker() {
    let (client, mut fake) = connected().await;
    let mut events = client.take_events().unwrap();
    assert!(client.take_events().is_none());
    fake.send(Frame::Event(Event::Exited {
        container_id: "c".into(),
        exec_id: "e".into(),
        status: ExitStatus::default(),
    }))
    .await;
    let ev = tokio::time::timeout(T, events.recv()).await.unwrap();
    assert!(matches!(ev, Some(Event::Exited { .. })));
}

#[tokio::test]
async fn connect_speaks_the_hybrid_vsock_line_protocol() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixListener;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let vmm = tokio::spawn(async move {
        // First connection: accepted and served.
        let (s, _) = listener.accept().await.unwrap();
        let (r, w) = tokio::io::split(s);
        let mut r = BufReader::new(r);
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert_eq!(line, "CONNECT 1024\n");
        let mut w = w;
        w.write_all(b"OK 1073741824\n").await.unwrap();
        let (r, w) = (r.into_inner(), w);
        let mut fake = FakeAgentAny { r, w };
        fake.accept_hello().await;
        let f = read_frame_async(&mut fake.r).await.unwrap().unwrap();
        let Frame::Request { id, .. } = f else {
            panic!("{f:?}")
        };
        write_frame_async(
            &mut fake.w,
            &Frame::Response {
                id,
                result: Ok(Response::Stats(Stats::default())),
            },
        )
        .await
        .unwrap();
        // Second connection: nothing listens on that port in the guest.
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 13];
        s.read_exact(&mut buf).await.unwrap();
        drop(s);
        fake
    });
    let client = AgentClient::connect(&path, AGENT_VSOCK_PORT, T)
        .await
        .unwrap();
    client.stats("c").await.unwrap();
    let r = AgentClient::connect(&path, 1025, T).await;
    assert!(
        matches!(r, Err(Error::VsockRefused { port: 1025, .. })),
        "{r:?}"
    );
    let _fake = vmm.await.unwrap();

    let r = AgentClient::connect(&dir.path().join("missing"), 1024, T).await;
    assert!(matches!(r, Err(Error::Connect { .. })), "{r:?}");
}

/// A fake agent over any split stream (for the Unix socket test).
struct FakeAgentAny<R, W> {
    r: R,
    w: W,
}

impl<R: tokio::io::AsyncRead + Unpin, W: tokio::io::AsyncWrite + Unpin> FakeAgentAny<R, W> {
    async fn accept_hello(&mut self) {
        let f = read_frame_async(&mut self.r).await.unwrap().unwrap();
        assert!(matches!(f, Frame::Hello(_)));
        write_frame_async(&mut self.w, &Frame::Hello(Hello::new(None)))
            .await
            .unwrap();
    }
}

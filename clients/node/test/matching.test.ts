// Replies matched by position: cbd answers each connection's requests in
// order, and a reply to a request whose id it could not read has no id.
import * as assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { after, before, describe, it } from "node:test";

import { CbdClient, CbdError } from "../src/index.js";
import { startCbd, type Daemon } from "./helpers.js";

const LONE_SURROGATE = "\ud800";

function isCode(code: string) {
  return (err: unknown) => err instanceof CbdError && err.code === code;
}

describe("replies matched by position, against cbd", () => {
  let daemon: Daemon;
  let client: CbdClient;
  before(async () => {
    daemon = await startCbd();
    client = new CbdClient(daemon.socket); // 5 s timeout: a hang would show
  });
  after(async () => {
    client.destroy();
    await daemon.cleanup();
  });

  it("sends a lone surrogate as the JSON escape \\ud800, which cbd cannot read", () => {
    // The premise of the next tests: the request line carries the raw JSON
    // text \ud800, and cbd answers parse_error with no id (checked below).
    assert.equal(JSON.stringify({ key: LONE_SURROGATE }), '{"key":"\\ud800"}');
  });

  it("rejects an id-less parse_error at once instead of waiting for the timeout", async () => {
    const t0 = performance.now();
    await assert.rejects(client.get(LONE_SURROGATE), (err: unknown) => {
      assert.ok(err instanceof CbdError);
      assert.equal(err.code, "parse_error");
      assert.equal(err.reply?.id, undefined, "cbd could not read the id");
      return true;
    });
    const ms = performance.now() - t0;
    assert.ok(ms < 1000, `took ${ms.toFixed(0)} ms`);
  });

  it("gives each pipelined call its own reply around an id-less one", async () => {
    await client.failure("pos-a");
    const connectionsBefore = (await client.stats()).connections.total;
    const [a, bad, b, alsoBad, c] = await Promise.allSettled([
      client.get("pos-a"),
      client.failure(`x${LONE_SURROGATE}y`),
      client.failure("pos-b"),
      client.transition(LONE_SURROGATE, "open"),
      client.get("pos-b"),
    ]);
    assert.equal(a.status === "fulfilled" && a.value.snapshot.failureCount, 1);
    assert.ok(bad.status === "rejected" && isCode("parse_error")(bad.reason));
    assert.equal(b.status === "fulfilled" && b.value.snapshot.failureCount, 1);
    assert.ok(alsoBad.status === "rejected" && isCode("parse_error")(alsoBad.reason));
    assert.equal(c.status === "fulfilled" && c.value.snapshot.failureCount, 1);
    // The same connection served all of it.
    assert.equal((await client.stats()).connections.total, connectionsBefore);
  });

  it("matches line_too_long (no id; cbd then closes), and the calls behind it see connection_lost", async () => {
    const huge = "k".repeat(70_000); // over cbd's 64 KiB line limit
    const [tooLong, behind] = await Promise.allSettled([client.get(huge), client.get("behind")]);
    assert.ok(tooLong.status === "rejected" && isCode("line_too_long")(tooLong.reason), String(tooLong.status === "rejected" && tooLong.reason));
    assert.ok(behind.status === "rejected" && isCode("connection_lost")(behind.reason));
    // The next call connects again.
    assert.equal((await client.get("pos-b")).snapshot.failureCount, 1);
  });

  it("keeps thousands of pipelined calls in order", async () => {
    const n = 5000;
    const replies = await Promise.all(
      Array.from({ length: n }, (_, i) => (i % 100 === 50 ? client.get(LONE_SURROGATE).catch((e: CbdError) => e.code) : client.failure("many"))),
    );
    let expected = 0;
    for (const [i, r] of replies.entries()) {
      if (i % 100 === 50) assert.equal(r, "parse_error");
      else assert.equal(typeof r === "object" && r.snapshot.failureCount, ++expected, `call ${i}`);
    }
  });
});

/** A fake cbd that answers each request line with whatever `answer` returns. */
async function fakePeer(answer: (line: string, socket: Socket) => string | null): Promise<{ socket: string; close(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), "cbd-node-fake-"));
  const path = join(dir, "fake.sock");
  const server: Server = createServer((conn) => {
    let buffer = "";
    conn.setEncoding("utf8");
    conn.on("data", (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const out = answer(buffer.slice(0, nl), conn);
        buffer = buffer.slice(nl + 1);
        if (out !== null) conn.write(out);
      }
    });
    conn.on("error", () => undefined);
  });
  await new Promise<void>((res) => server.listen(path, res));
  return {
    socket: path,
    close: () =>
      new Promise<void>((res) => {
        server.close(() => {
          rmSync(dir, { recursive: true, force: true });
          res();
        });
      }),
  };
}

describe("replies matched by position, against a peer that breaks the protocol", () => {
  it("rejects with bad_reply when a reply's id is not the next call's", async () => {
    const peer = await fakePeer((line) => {
      const { id } = JSON.parse(line) as { id: number };
      return JSON.stringify({ id: id + 1000, ok: true, version: "fake", protocol: 7 }) + "\n";
    });
    const client = new CbdClient(peer.socket);
    try {
      await assert.rejects(client.ping(), (err: unknown) => isCode("bad_reply")(err) && /answered id/.test((err as Error).message));
    } finally {
      client.destroy();
      await peer.close();
    }
  });

  it("rejects with bad_reply when a line is not JSON, and on a reply nobody asked for", async () => {
    let n = 0;
    const peer = await fakePeer((line) => {
      const { id } = JSON.parse(line) as { id: number };
      n++;
      if (n === 1) return "not json\n";
      return `{"id":${id},"ok":true,"version":"fake","protocol":7}\n{"ok":true}\n`;
    });
    const client = new CbdClient(peer.socket);
    try {
      await assert.rejects(client.ping(), (err: unknown) => isCode("bad_reply")(err) && /not JSON/.test((err as Error).message));
      // The broken connection was dropped; the next call opens a new one.
      assert.equal((await client.ping()).version, "fake");
      // The unasked-for line after that reply broke the connection too, but
      // no call was waiting; the next call gets a fresh connection again.
      await new Promise((r) => setTimeout(r, 20));
      assert.equal((await client.ping()).version, "fake");
    } finally {
      client.destroy();
      await peer.close();
    }
  });

  it("drops a peer whose reply line never ends, past 16 MiB", async () => {
    const peer = await fakePeer((_line, conn) => {
      const chunk = "x".repeat(1024 * 1024);
      for (let i = 0; i < 17; i++) conn.write(chunk);
      return null;
    });
    const client = new CbdClient(peer.socket);
    try {
      await assert.rejects(client.ping(), (err: unknown) => isCode("bad_reply")(err) && /longer than/.test((err as Error).message));
    } finally {
      client.destroy();
      await peer.close();
    }
  });
});

// A TCP connection from inside a namespace, held open by a child process the test steers over
// stdin: send n bytes and wait for their echo, half-close, or wait until the mesh closes it.
import type { ChildProcess } from 'node:child_process';

export interface HeldConnection {
  /** Sends n bytes and resolves with the total echoed so far once they came back (or it closed). */
  exchange(n: number): Promise<number>;
  /** Half-closes the client side (FIN). */
  end(): void;
  /** Resolves when the connection closed (within `ms`, default 10 s), with the bytes echoed in total. */
  waitClosed(ms?: number): Promise<{ total: number }>;
  kill(): void;
}

type Event = { event: string; total?: number };

/** The child's script: `node -e` inside the namespace, one JSON event per line on stdout. */
export function heldConnectionScript(ip: string, port: number): string {
  return `const s=require('net').connect(${port},${JSON.stringify(ip)});let total=0,want=0;
const out=(o)=>process.stdout.write(JSON.stringify(o)+'\\n');
s.on('connect',()=>out({event:'connected'}));
s.on('data',d=>{total+=d.length;if(total>=want)out({event:'echoed',total})});
s.on('close',()=>{out({event:'closed',total});process.exit(0)});s.on('error',()=>{});
process.stdin.on('data',d=>{for(const n of String(d).trim().split(/\\s+/)){if(n==='end'){s.end();continue}want+=Number(n);s.write(Buffer.alloc(Number(n),120))}});`;
}

export function steerHeldConnection(child: ChildProcess): HeldConnection {
  const events: Event[] = [];
  const waiters: { p: (e: Event) => boolean; r: (e: Event) => void }[] = [];
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const e = JSON.parse(buf.slice(0, i)) as Event;
      buf = buf.slice(i + 1);
      events.push(e);
      for (const w of [...waiters]) {
        if (!w.p(e)) continue;
        waiters.splice(waiters.indexOf(w), 1);
        w.r(e);
      }
    }
  });
  const next = (p: (e: Event) => boolean, ms = 10_000) =>
    new Promise<Event>((resolve, reject) => {
      const seen = events.find(p);
      if (seen) return resolve(seen);
      const t = setTimeout(
        () => reject(new Error(`held connection: timed out; events ${JSON.stringify(events)}`)),
        ms,
      );
      waiters.push({
        p,
        r: (e) => {
          clearTimeout(t);
          resolve(e);
        },
      });
    });
  let sent = 0;
  return {
    async exchange(n) {
      await next((e) => e.event === 'connected');
      sent += n;
      child.stdin!.write(`${n}\n`);
      const e = await next((e) => (e.event === 'echoed' && Number(e.total) >= sent) || e.event === 'closed');
      return Number(e.total);
    },
    end: () => child.stdin!.write('end\n'),
    waitClosed: (ms?: number) =>
      next((e) => e.event === 'closed', ms).then((e) => ({ total: Number(e.total) })),
    kill: () => child.kill(),
  };
}

import { afterEach, describe, expect, it } from 'vitest';
import {
  CertManager,
  type CertManagerClock,
  CertManagerError,
  parseSpiffeId,
  type SpiffeId,
  type WorkloadCertificate,
} from '../../src/identity/index.js';

/** Manual time: timers fire only when the test advances the clock. */
class FakeClock implements CertManagerClock {
  t = 1_000_000;
  #seq = 0;
  timers = new Map<number, { at: number; fn: () => void }>();
  now = () => this.t;
  setTimeout = (fn: () => void, ms: number) => {
    const id = ++this.#seq;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  };
  clearTimeout = (h: unknown) => {
    this.timers.delete(h as number);
  };
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (let guard = 0; guard < 10_000; guard++) {
      await settle();
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.timers) if (e[1].at <= end && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise<void>((r) => setImmediate(r));
}

/** A CA stand-in: records calls, can fail, can hold answers back. */
class FakeProvider {
  calls: { id: string; at: number }[] = [];
  failWith: Error | undefined;
  hold = false;
  held: (() => void)[] = [];
  inFlight = 0;
  maxInFlight = 0;
  #serial = 0;
  constructor(
    readonly clock: FakeClock,
    readonly ttlMs: number,
  ) {}
  fetch = async (id: SpiffeId): Promise<WorkloadCertificate> => {
    this.calls.push({ id: id.toString(), at: this.clock.now() });
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.hold) await new Promise<void>((r) => this.held.push(r));
      if (this.failWith) throw this.failWith;
      const now = this.clock.now();
      return {
        id,
        serial: (++this.#serial).toString(16),
        notBefore: new Date(now),
        notAfter: new Date(now + this.ttlMs),
        certChainPem: 'chain',
        trustBundlePem: 'bundle',
        keyPem: 'key',
      };
    } finally {
      this.inFlight--;
    }
  };
  release(): void {
    for (const r of this.held.splice(0)) r();
  }
}

const WEB = parseSpiffeId('spiffe://cluster.local/ns/shop/sa/web');
const HOUR = 3_600_000;
let managers: CertManager[] = [];
afterEach(() => {
  for (const m of managers) m.close();
  managers = [];
});

function setup(ttlMs = 24 * HOUR, random = () => 0.5) {
  const clock = new FakeClock();
  const ca = new FakeProvider(clock, ttlMs);
  const m = new CertManager({ provider: ca.fetch, clock, random });
  managers.push(m);
  return { clock, ca, m };
}

describe('CertManager', () => {
  it('fetches once for many concurrent callers of one identity', async () => {
    const { ca, m } = setup();
    const results = await Promise.all(Array.from({ length: 100 }, () => m.fetchCertificate(WEB)));
    expect(ca.calls).toHaveLength(1);
    expect(new Set(results.map((r) => r.serial)).size).toBe(1);
    expect(m.findCertificate(WEB)?.serial).toBe(results[0]!.serial);
    expect(m.findExpiry(WEB)?.getTime()).toBe(results[0]!.notAfter.getTime());
  });

  it('renews at about half life (jittered down by at most 10 %)', async () => {
    const { clock, ca, m } = setup(100_000, () => 0.999);
    const renewed: string[] = [];
    m.subscribe((_id, cert) => renewed.push(cert.serial));
    const first = await m.fetchCertificate(WEB);
    await clock.advance(44_000);
    expect(ca.calls).toHaveLength(1);
    await clock.advance(6_000);
    expect(ca.calls).toHaveLength(2);
    expect(ca.calls[1]!.at - ca.calls[0]!.at).toBeGreaterThanOrEqual(45_000);
    expect(ca.calls[1]!.at - ca.calls[0]!.at).toBeLessThanOrEqual(50_000);
    expect(m.findCertificate(WEB)?.serial).not.toBe(first.serial);
    expect(renewed).toEqual([first.serial, m.findCertificate(WEB)!.serial]);
  });

  it('backs off exponentially from 0.5 s to 150 s while the CA is down, keeping the old certificate, and recovers', async () => {
    const { clock, ca, m } = setup(20 * 60_000); // 20 min: renewal due at 10 min, expiry at 20 min
    const first = await m.fetchCertificate(WEB);
    ca.failWith = new Error('connect ECONNREFUSED 127.0.0.1:15012');
    await clock.advance(9.5 * 60_000); // renewal (half of 20 min, less 5 % jitter at random=0.5) fails
    expect(ca.calls).toHaveLength(2);
    await clock.advance(9 * 60_000);
    const gaps = ca.calls.slice(2).map((c, i) => c.at - ca.calls[i + 1]!.at);
    // random=0.5 → no jitter: 0.5, 1, 2, 4, ... 128, then capped at 150 s
    expect(gaps.slice(0, 9)).toEqual([500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000]);
    expect(gaps.slice(9).every((g) => g === 150_000)).toBe(true);
    // The old certificate is still served while valid.
    expect(m.findCertificate(WEB)?.serial).toBe(first.serial);
    expect((await m.fetchCertificate(WEB)).serial).toBe(first.serial);
    const status = m.listCertificates()[0]!;
    expect(status.state).toBe('backoff');
    expect(status.lastError).toMatch(/ECONNREFUSED/);
    // Past expiry nothing is served, and callers learn why at once.
    await clock.advance(100_000);
    expect(m.findCertificate(WEB)).toBeUndefined();
    await expect(m.fetchCertificate(WEB)).rejects.toMatchObject({
      code: 'CERT_UNAVAILABLE',
      message: /ECONNREFUSED/,
    });
    // The CA comes back: the next retry succeeds and the backoff resets.
    ca.failWith = undefined;
    await clock.advance(150_000);
    const fresh = m.findCertificate(WEB);
    expect(fresh).toBeDefined();
    expect(fresh!.serial).not.toBe(first.serial);
    expect(m.listCertificates()[0]).toMatchObject({ state: 'ready', failures: 0 });
  });

  it('rejects first-time callers when the CA fails, then retries in the background', async () => {
    const { clock, ca, m } = setup();
    ca.failWith = new Error('CA answered 403 FORBIDDEN');
    const err = await m.fetchCertificate(WEB).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CertManagerError);
    expect((err as CertManagerError).code).toBe('CERT_UNAVAILABLE');
    await expect(m.fetchCertificate(WEB)).rejects.toThrow(/next attempt in 1 s/);
    ca.failWith = undefined;
    await clock.advance(600);
    expect(m.findCertificate(WEB)).toBeDefined();
    expect(ca.calls).toHaveLength(2);
  });

  it('runs at most 8 fetches at once, new identities ahead of renewals', async () => {
    const { clock, ca, m } = setup(100_000);
    const ids = Array.from({ length: 20 }, (_, i) => parseSpiffeId(`spiffe://cluster.local/ns/n${i}/sa/s`));
    await Promise.all(ids.slice(0, 10).map((id) => m.fetchCertificate(id)));
    ca.hold = true;
    await clock.advance(50_000); // 10 renewals due
    expect(ca.inFlight).toBe(8);
    const late = ids.slice(10).map((id) => m.fetchCertificate(id));
    ca.release(); // the 8 renewals finish; the queue holds 2 renewals and 10 new identities
    await settle();
    expect(ca.calls.slice(18, 26).every((c) => Number(c.id.match(/ns\/n(\d+)/)![1]) >= 10)).toBe(true);
    for (let i = 0; i < 5 && ca.held.length > 0; i++) {
      ca.release();
      await settle();
    }
    ca.hold = false;
    ca.release();
    await Promise.all(late);
    expect(ca.maxInFlight).toBe(8);
  });

  it('forgets an identity: no more renewals, waiters told why', async () => {
    const { clock, ca, m } = setup(100_000);
    await m.fetchCertificate(WEB);
    m.forget(WEB);
    await clock.advance(200_000);
    expect(ca.calls).toHaveLength(1);
    expect(m.findCertificate(WEB)).toBeUndefined();
    ca.hold = true;
    const pending = m.fetchCertificate(WEB);
    await settle();
    m.forget(WEB);
    await expect(pending).rejects.toMatchObject({ code: 'CERT_FORGOTTEN' });
    ca.release();
  });

  it('reports each failed renewal and, once, the expiry of a certificate the CA never renewed; /certs says expired', async () => {
    const clock = new FakeClock();
    const ca = new FakeProvider(clock, 40_000);
    const failures: { id: string; notAfter: number; error: string }[] = [];
    const expired: { id: string; notAfter: number; lastError?: string }[] = [];
    const m = new CertManager({
      provider: ca.fetch,
      clock,
      random: () => 0.5,
      onRenewalFailed: (f) =>
        failures.push({ id: f.id.toString(), notAfter: f.notAfter.getTime(), error: f.error.message }),
      onExpired: (e) => {
        const ev: { id: string; notAfter: number; lastError?: string } = {
          id: e.id.toString(),
          notAfter: e.notAfter.getTime(),
        };
        if (e.lastError !== undefined) ev.lastError = e.lastError;
        expired.push(ev);
      },
    });
    managers.push(m);
    const first = await m.fetchCertificate(WEB);
    ca.failWith = new Error('connect ECONNREFUSED 10.0.0.1:15012');
    await clock.advance(30_000);
    expect(failures.length).toBeGreaterThan(0);
    expect(failures[0]).toEqual({
      id: WEB.toString(),
      notAfter: first.notAfter.getTime(),
      error: 'connect ECONNREFUSED 10.0.0.1:15012',
    });
    expect(expired).toEqual([]);
    expect(m.listCertificates()[0]!.state).toBe('backoff');
    await clock.advance(30_000);
    expect(expired).toEqual([
      {
        id: WEB.toString(),
        notAfter: first.notAfter.getTime(),
        lastError: 'connect ECONNREFUSED 10.0.0.1:15012',
      },
    ]);
    expect(m.listCertificates()[0]!.state).toBe('expired');
    // The CA returns: renewed, ready again, and no second expiry report for the old certificate.
    ca.failWith = undefined;
    await clock.advance(200_000);
    expect(m.listCertificates()[0]!.state).toBe('ready');
    expect(expired).toHaveLength(1);
  });

  it('after close, rejects callers and leaves no timers behind', async () => {
    const { clock, m } = setup();
    await m.fetchCertificate(WEB);
    expect(clock.timers.size).toBe(1);
    m.close();
    expect(clock.timers.size).toBe(0);
    await expect(m.fetchCertificate(WEB)).rejects.toMatchObject({ code: 'CERT_MANAGER_CLOSED' });
  });
});

import { writeFileSync } from 'node:fs';
import { createKubeApiServer } from '@hypha/test';
import { it } from 'vitest';

it('serve', async () => {
  const s = await createKubeApiServer();
  s.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } });
  s.put({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web', namespace: 'shop' },
    spec: { nodeName: 'n1', containers: [{ name: 'c', image: 'x' }] },
    status: { podIP: '10.0.0.1' },
  });
  writeFileSync('/tmp/kc-path', s.kubeconfigPath);
  await new Promise((r) => setTimeout(r, 40000));
  await s.close();
}, 60000);

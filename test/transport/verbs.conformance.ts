// Proves that the 'verbs' provider (RDMA through libibverbs) passes the transport conformance suite.
// It runs only inside the soft-RoCE VM (rxe0 at 10.200.0.1), started by the VM runner, so its name
// keeps it out of the host's `npm test` glob (dist/test/**/*.test.js). The VM is several times
// slower than the host, hence the light scale.

import { conformance } from './conformance';

conformance('verbs', { host: process.env.DPMS_VERBS_HOST ?? '10.200.0.1', light: true });

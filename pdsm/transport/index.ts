// pDSM's transport layer, the only way pDSM reaches another node: connect() to a node's registered
// regions and serve() a node's own. Three providers implement one interface (types.ts): 'tcp' (the
// addon's serving thread executes one-sided operations), 'verbs' (RDMA: the NIC does), and 'local'
// (same host: the client maps the node's files). docs/TRANSPORT.md describes each.

import { DpmsError } from '../errors';
import { connectLocal } from './local';
import { connectNetwork } from './network';
import type { Connection, ConnectTarget } from './types';

export { serve } from './server';
export type {
  Connection, ConnectTarget, ProviderName, RegionInfo, Server, ServerStats, ServeTarget, UncheckedAccess,
} from './types';
export { DEFAULT_MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES_LIMIT } from './types';

/** Connect and authenticate to a node. Rejects with DPMS_AUTH, DPMS_UNREACHABLE, DPMS_TIMEOUT, ... */
export function connect(target: ConnectTarget): Promise<Connection> {
  switch (target.provider) {
    case 'local':
      return connectLocal(target);
    case 'tcp':
    case 'verbs':
      return connectNetwork(target.provider, target);
    default:
      return Promise.reject(new DpmsError('DPMS_INVALID_ARGUMENT',
        `unknown transport provider '${String((target as { provider: unknown }).provider)}' (local, tcp or verbs)`));
  }
}

// The serving side of the network providers: registers a node's regions with the addon's server
// (tcp or verbs) and turns its event stream into the ServeTarget callbacks. One-sided operations
// never come here (the serving thread or the NIC executes them); only connection events, two-sided
// messages and write-with-immediate notices reach JavaScript.

import { serve as nativeServe, type ServerEvent, type TransportServer } from '../../native';
import { callNative, DpmsError } from '../errors';
import { checkMaxMessageBytes } from './checks';
import type { RegionInfo, Server, ServeTarget, ServerStats } from './types';

export function serve(target: ServeTarget): Server {
  if (target.provider !== 'tcp' && target.provider !== 'verbs') {
    throw new DpmsError('DPMS_INVALID_ARGUMENT',
      `a node serves 'tcp' or 'verbs' (it serves 'local' clients over tcp), not '${String(target.provider)}'`);
  }
  if (typeof target.onMessage !== 'function') throw new DpmsError('DPMS_INVALID_ARGUMENT', 'serve needs an onMessage handler');
  const maxMessageBytes = checkMaxMessageBytes(target.maxMessageBytes);
  let inner: TransportServer | undefined;

  const onEvent = (event: ServerEvent): void => {
    switch (event.type) {
      case 'message': {
        const { connection, requestId } = event;
        let answered = false;
        // An answer the provider refuses (too large for the client: DPMS_INVALID_ARGUMENT) throws and
        // leaves the message unanswered, so the handler may answer again with something smaller.
        const reply = (answer: Uint8Array): void => {
          if (answered) throw new DpmsError('DPMS_INVALID_ARGUMENT', `message ${requestId} on connection ${connection} was already answered`);
          callNative(() => inner!.reply(connection, requestId, answer), `cannot answer connection ${connection}`);
          answered = true;
        };
        try {
          target.onMessage(connection, event.payload, reply);
        } catch (error) {
          // A handler that throws is a bug above this layer: drop the client so its call fails
          // with DPMS_DISCONNECTED instead of waiting forever, then let the error surface.
          inner!.disconnect(connection);
          throw error;
        }
        return;
      }
      case 'immediate':
        target.onImmediate?.(event.connection, event.immediate, event.length);
        return;
      case 'open':
        target.onOpen?.(event.connection, event.peer);
        return;
      case 'close':
        target.onClose?.(event.connection, event.reason);
        return;
    }
  };

  inner = callNative(() => nativeServe(target.provider, {
    host: target.host,
    port: target.port,
    secret: target.secret,
    nodeId: target.nodeId,
    regions: target.regions,
    maxMessageBytes,
    handshakeTimeoutMs: target.handshakeTimeoutMs,
    onEvent,
  }), `cannot serve ${target.provider} on ${target.host}:${target.port}`);
  return new NodeServer(inner);
}

class NodeServer implements Server {
  readonly port: number;
  readonly regions: readonly RegionInfo[];

  constructor(private readonly inner: TransportServer) {
    this.port = inner.port;
    this.regions = Object.freeze(inner.regions.map((region) => Object.freeze({ sizeBytes: region.sizeBytes, rkey: region.rkey })));
  }

  stats(): ServerStats {
    return this.inner.stats();
  }

  disconnect(connection: number): void {
    callNative(() => this.inner.disconnect(connection), `cannot disconnect connection ${connection}`);
  }

  close(): void {
    callNative(() => this.inner.close(), 'cannot stop serving');
  }
}

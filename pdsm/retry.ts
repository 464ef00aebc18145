// The one retry loop behind Pdsm.transaction and ClusterClient.transaction: run the body in a fresh
// transaction, commit, and start over when it lost a lock conflict, after a backoff, up to a bound.

import { isDpmsError } from './errors';

export interface RetryableTransaction {
  readonly status: string;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

export async function retryOnConflict<Tx extends RetryableTransaction, T>(
  begin: () => Tx, body: (tx: Tx) => Promise<T>, maxRetries: number, backoff: (attempt: number) => Promise<void>,
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    const tx = begin();
    try {
      const result = await body(tx);
      await tx.commit();
      return result;
    } catch (error) {
      if (tx.status === 'active') await tx.abort();
      if (!isDpmsError(error, 'DPMS_TX_CONFLICT') || attempt >= maxRetries) throw error;
      await backoff(attempt);
    }
  }
}

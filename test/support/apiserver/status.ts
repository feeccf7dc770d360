// Errors as the API server reports them: an HTTP code with a Status body naming the reason.
export class StatusError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

export function statusBody(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

/** The Status to answer for an error thrown while serving a request. */
export function asStatus(err: unknown): StatusError {
  if (err instanceof StatusError) return err;
  if (err instanceof SyntaxError) return new StatusError(400, 'BadRequest', `invalid JSON body: ${err.message}`);
  return new StatusError(500, 'InternalError', String(err));
}

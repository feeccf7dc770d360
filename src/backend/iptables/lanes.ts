// Restores written side by side: inputs that do not depend on each other run on up to `lanes`
// tools at once, the next starting as soon as one ends (a batch would wait for its slowest);
// an input that others depend on runs alone, after everything before it and before anything
// after it. Pure orchestration: `start` runs the tool.

export class RestoreLanes {
  private readonly running = new Map<number, Promise<void>>();
  /** The input running now must end before anything else starts. */
  private barrier = false;
  private failure: { error: unknown } | undefined;

  constructor(
    private readonly lanes: number,
    private readonly start: (input: string, lane: number) => Promise<void>,
  ) {}

  /** Starts `input` once every earlier one has ended; nothing starts beside it. */
  async alone(input: string): Promise<void> {
    await this.drain();
    this.launch(input, 0);
    this.barrier = true;
  }

  /** Starts `input` on a free lane, beside the others started this way. */
  async beside(input: string): Promise<void> {
    if (this.barrier) await this.drain();
    while (this.running.size >= this.lanes) {
      await Promise.race(this.running.values());
      await this.stopOnFailure();
    }
    await this.stopOnFailure();
    let lane = 0;
    while (this.running.has(lane)) lane++;
    this.launch(input, lane);
  }

  /** Resolves once every input started has ended; throws the first failure. */
  async drain(): Promise<void> {
    await Promise.all(this.running.values());
    this.barrier = false;
    await this.stopOnFailure();
  }

  private launch(input: string, lane: number): void {
    const ended = this.start(input, lane)
      .then(
        () => undefined,
        (error: unknown) => {
          this.failure ??= { error };
        },
      )
      .finally(() => this.running.delete(lane));
    this.running.set(lane, ended);
  }

  /** After a failure nothing more starts: what runs ends, then the failure is thrown. */
  private async stopOnFailure(): Promise<void> {
    if (!this.failure) return;
    await Promise.all(this.running.values());
    throw this.failure.error;
  }
}

// Node test reporter used by scripts/run-tests.mjs for one test file: collects the counts, each
// failure with its error, and the file's own output, and prints them as one JSON object.
const OUTPUT_TAIL_LINES = 200;

function formatError(error) {
  const cause = error?.cause ?? error;
  const text = cause?.stack ? String(cause.stack) : String(cause?.message ?? cause);
  const extra = [];
  for (const key of ['actual', 'expected']) {
    if (cause?.[key] !== undefined && !text.includes(`${key}:`)) extra.push(`${key}: ${JSON.stringify(cause[key])?.slice(0, 2000)}`);
  }
  return [text, ...extra].join('\n');
}

export default async function* reporter(source) {
  const result = { pass: 0, fail: 0, skip: 0, todo: 0, failures: [], output: [] };
  const path = [];
  for await (const event of source) {
    const data = event.data ?? {};
    switch (event.type) {
      case 'test:start':
        path[data.nesting] = data.name;
        break;
      case 'test:stdout':
      case 'test:stderr':
        result.output.push(...String(data.message).replace(/\n$/, '').split('\n'));
        if (result.output.length > OUTPUT_TAIL_LINES * 2) result.output.splice(0, result.output.length - OUTPUT_TAIL_LINES);
        break;
      case 'test:pass':
      case 'test:fail': {
        const name = [...path.slice(0, data.nesting), data.name].join(' › ');
        if (data.details?.type === 'suite') {
          // A suite fails through its tests, except when its own hooks fail.
          if (event.type === 'test:fail' && data.details?.error?.failureType !== 'subtestsFailed') {
            result.fail++;
            result.failures.push({ name, error: formatError(data.details?.error) });
          }
        } else if (data.skip !== undefined) result.skip++;
        else if (data.todo !== undefined) result.todo++;
        else if (event.type === 'test:pass') result.pass++;
        else {
          result.fail++;
          result.failures.push({ name, error: formatError(data.details?.error) });
        }
        break;
      }
      default:
        break;
    }
  }
  result.output = result.output.slice(-OUTPUT_TAIL_LINES);
  yield JSON.stringify(result) + '\n';
}

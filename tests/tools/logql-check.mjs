// Reads a JSON array of LogQL expressions on stdin; prints a JSON array with, for
// each, the offset of the first syntax error (null when it parses), using Grafana's
// own LogQL grammar.
import { parser } from '@grafana/lezer-logql';

let input = '';
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((expr) => {
  let errorAt = null;
  parser.parse(expr).iterate({
    enter: (node) => {
      if (node.type.isError && errorAt === null) errorAt = node.from;
    },
  });
  return { expr, error_at: errorAt };
});
process.stdout.write(JSON.stringify(results));

// The server and connection commands of the RESP gateway (PING, ECHO, INFO, COMMAND, CLIENT, CONFIG,
// SELECT, HELLO, AUTH, QUIT), which tell clients what they need to start and work (redis-cli asks for
// COMMAND on start, ioredis sends INFO and CLIENT SETINFO, redis-benchmark reads CONFIG GET), and the
// full command table the gateway dispatches on.

import {
  arrayReply, bulkReply, errorReply, integerReply, NULL_BULK_REPLY, OK_REPLY, simpleStringReply,
} from './resp';
import { globMatch } from './glob';
import {
  arityError, NOT_AN_INTEGER, parseRedisInteger, READ_ALL, REDIS_COMPATIBLE_VERSION, spec, upper, withSubcommands,
  type CommandSpec, type GatewayClient, type GatewayContext,
} from './resp-command-spec';
import { DATA_COMMANDS } from './resp-data-commands';

function infoSections(context: GatewayContext, client: GatewayClient, keys: number): Map<string, string[]> {
  const uptimeSeconds = Math.floor((Date.now() - context.startedMs) / 1000);
  let connected = 0;
  for (const _ of context.clients()) connected++;
  return new Map([
    ['server', [
      'server_name:dpms',
      `redis_version:${REDIS_COMPATIBLE_VERSION}`,
      'redis_mode:standalone',
      `dpms_store:${context.store.name}`,
      `os:${process.platform} ${process.arch}`,
      'arch_bits:64',
      `process_id:${process.pid}`,
      `tcp_port:${context.port}`,
      `uptime_in_seconds:${uptimeSeconds}`,
      `uptime_in_days:${Math.floor(uptimeSeconds / 86400)}`,
      `node_version:${process.version}`,
    ]],
    ['clients', [
      `connected_clients:${connected}`,
      `maxclients:${context.limits.maxConnections}`,
      `client_id:${client.id}`,
    ]],
    ['persistence', ['loading:0']],
    ['stats', [
      `total_connections_received:${context.stats.connectionsReceived}`,
      `total_commands_processed:${context.stats.commandsProcessed}`,
      `rejected_connections:${context.stats.rejectedConnections}`,
      `total_protocol_errors:${context.stats.protocolErrors}`,
    ]],
    // Like Redis, an empty database is not listed.
    ['keyspace', keys > 0 ? [`db0:keys=${keys},expires=0,avg_ttl=0`] : []],
  ]);
}

async function infoCommand(context: GatewayContext, client: GatewayClient, args: readonly Buffer[]): Promise<Buffer> {
  const requested = args.slice(1).map((arg) => arg.toString('latin1').toLowerCase());
  const all = requested.length === 0 || requested.some((name) => ['all', 'everything', 'default'].includes(name));
  const keys = all || requested.includes('keyspace') ? await context.store.count() : 0;
  const sections = infoSections(context, client, keys);
  const text = [...sections]
    .filter(([name]) => all || requested.includes(name))
    .map(([name, lines]) => `# ${name[0]!.toUpperCase()}${name.slice(1)}\r\n${lines.map((line) => `${line}\r\n`).join('')}`)
    .join('\r\n');
  return bulkReply(text);
}

/** Redis allows client names of printable ASCII without blanks. */
function validClientName(name: Buffer): boolean {
  return name.every((byte) => byte >= 0x21 && byte <= 0x7e);
}

function clientInfoLine(context: GatewayContext, client: GatewayClient): string {
  const now = Date.now();
  return `id=${client.id} addr=${client.remoteAddress} laddr=${client.localAddress} name=${client.name} ` +
    `age=${Math.floor((now - client.createdMs) / 1000)} idle=${Math.floor((now - client.lastCommandMs) / 1000)} flags=N db=0 ` +
    `cmd=${client.lastCommand} user=default resp=2 lib=dpms-gateway store=${context.store.name}\n`;
}

function helloReply(client: GatewayClient): Buffer {
  return arrayReply([
    bulkReply('server'), bulkReply('redis'),
    bulkReply('version'), bulkReply(REDIS_COMPATIBLE_VERSION),
    bulkReply('proto'), integerReply(2),
    bulkReply('id'), integerReply(client.id),
    bulkReply('mode'), bulkReply('standalone'),
    bulkReply('role'), bulkReply('master'),
    bulkReply('modules'), arrayReply([]),
  ]);
}

const NO_AUTH_ERROR = 'ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?';

function helloCommand(client: GatewayClient, args: readonly Buffer[]): Buffer {
  if (args.length >= 2) {
    const version = parseRedisInteger(args[1]!);
    if (version === undefined) return errorReply('ERR Protocol version is not an integer or out of range');
    // The gateway speaks RESP2 only; Redis answers a version it does not speak with NOPROTO.
    if (version !== 2n) return errorReply('NOPROTO unsupported protocol version');
  }
  let name: Buffer | undefined;
  for (let index = 2; index < args.length; index++) {
    const option = upper(args[index]!);
    if (option === 'AUTH' && index + 2 < args.length) return errorReply(NO_AUTH_ERROR);
    if (option === 'SETNAME' && index + 1 < args.length) {
      name = args[++index]!;
      if (!validClientName(name)) return errorReply('ERR Client names cannot contain spaces, newlines or special characters.');
    } else {
      return errorReply(`ERR Syntax error in HELLO option '${args[index]!.toString('utf8').slice(0, 64)}'`);
    }
  }
  if (name) client.name = name.toString('latin1');
  return helloReply(client);
}

function clientSubcommands(): CommandSpec[] {
  const sub = (name: string, arity: number, summary: string, run: CommandSpec['run']): CommandSpec => spec({
    name: `client|${name}`, arity, summary, run, flags: ['noscript', 'loading', 'stale'], categories: ['@slow', '@connection'], group: 'connection', since: '2.4.0',
  });
  return [
    sub('setname', 3, 'Set the current connection name', (_context, client, args) => {
      if (!validClientName(args[2]!)) return errorReply('ERR Client names cannot contain spaces, newlines or special characters.');
      client.name = args[2]!.toString('latin1');
      return OK_REPLY;
    }),
    sub('getname', 2, 'Get the current connection name', (_context, client) => (client.name ? bulkReply(client.name) : NULL_BULK_REPLY)),
    sub('id', 2, 'Returns the client ID for the current connection', (_context, client) => integerReply(client.id)),
    sub('info', 2, 'Returns information about the current client connection', (context, client) => bulkReply(clientInfoLine(context, client))),
    sub('list', -2, 'Get the list of client connections', (context) => bulkReply([...context.clients()].map((client) => clientInfoLine(context, client)).join(''))),
    // Client libraries (ioredis 5, redis-py) announce themselves with SETINFO; accept and ignore it.
    sub('setinfo', 4, 'Set client or connection specific info', (_context, _client, args) => {
      const attribute = upper(args[2]!);
      return attribute === 'LIB-NAME' || attribute === 'LIB-VER' ? OK_REPLY : errorReply(`ERR Unrecognized option '${args[2]!.toString('utf8').slice(0, 64)}'`);
    }),
    sub('help', 2, 'Show helpful text about the different subcommands', () => arrayReply([
      'CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:',
      'GETNAME', '    Return the name of the current connection.',
      'ID', '    Return the ID of the current connection.',
      'INFO', '    Return information about the current client connection.',
      'LIST', '    Return information about client connections.',
      'SETNAME <name>', '    Assign the name <name> to the current connection.',
      'SETINFO <LIB-NAME|LIB-VER> <value>', '    Accepted and ignored.',
      'HELP', '    Print this help.',
    ].map(simpleStringReply))),
  ];
}

function commandSubcommands(): CommandSpec[] {
  const sub = (name: string, arity: number, summary: string, run: CommandSpec['run']): CommandSpec => spec({
    name: `command|${name}`, arity, summary, run, flags: ['loading', 'stale'], categories: ['@slow', '@connection'], group: 'server', since: '2.8.13',
  });
  const named = (args: readonly Buffer[]): Array<CommandSpec | undefined> => args.slice(2).map((arg) => COMMANDS.get(arg.toString('latin1').toLowerCase()));
  return [
    sub('count', 2, 'Get total number of Redis commands', () => integerReply(COMMANDS.size)),
    sub('info', -2, 'Get array of specific Redis command details, or all when no argument is given', (_context, _client, args) => {
      const specs = args.length > 2 ? named(args) : [...COMMANDS.values()];
      return arrayReply(specs.map((found) => (found ? commandInfo(found) : Buffer.from('*-1\r\n'))));
    }),
    sub('docs', -2, 'Get array of specific Redis command documentation', (_context, _client, args) => {
      const specs = (args.length > 2 ? named(args) : [...COMMANDS.values()]).filter((found): found is CommandSpec => found !== undefined);
      return arrayReply(specs.flatMap((found) => [bulkReply(found.name), commandDocs(found)]));
    }),
    sub('list', -2, 'Get an array of Redis command names', () => arrayReply([...COMMANDS.keys()].map(bulkReply))),
  ];
}

/**
 * CONFIG GET answers from a few read-only parameters that tools ask about (redis-benchmark reads
 * "save" and "appendonly" before it starts); nothing is settable.
 */
function configParameters(context: GatewayContext): Array<[string, string]> {
  return [
    // Every write is durable in persistent memory when it is acknowledged: closest to an
    // always-fsynced append-only file, with no snapshots to save.
    ['appendonly', 'yes'],
    ['appendfsync', 'always'],
    ['save', ''],
    ['databases', '1'],
    ['maxclients', String(context.limits.maxConnections)],
    ['port', String(context.port)],
    ['proto-max-bulk-len', String(context.limits.maxBulkBytes)],
  ];
}

function configSubcommands(): CommandSpec[] {
  const sub = (name: string, arity: number, summary: string, run: CommandSpec['run']): CommandSpec => spec({
    name: `config|${name}`, arity, summary, run, flags: ['admin', 'noscript', 'loading', 'stale'], categories: ['@admin', '@slow', '@dangerous'], group: 'server', since: '2.0.0',
  });
  return [
    sub('get', -3, 'Get the values of configuration parameters (a few read-only ones in dpms)', (context, _client, args) => {
      const patterns = args.slice(2);
      const found = configParameters(context).filter(([name]) => patterns.some((pattern) => globMatch(Buffer.from(pattern.toString('latin1').toLowerCase()), Buffer.from(name))));
      return arrayReply(found.flatMap(([name, value]) => [bulkReply(name), bulkReply(value)]));
    }),
    sub('set', -4, 'Set configuration parameters (not supported by dpms)', () => errorReply('ERR CONFIG SET is not supported by the dpms gateway')),
  ];
}

/** COMMAND INFO's ten fields, in Redis 7's order. */
function commandInfo(command: CommandSpec): Buffer {
  return arrayReply([
    bulkReply(command.name),
    integerReply(command.arity),
    arrayReply(command.flags.map(simpleStringReply)),
    integerReply(command.keys[0]), integerReply(command.keys[1]), integerReply(command.keys[2]),
    arrayReply(command.categories.map(simpleStringReply)),
    arrayReply([]), // tips
    arrayReply([]), // key specifications
    arrayReply([...(command.subcommands?.values() ?? [])].map(commandInfo)),
  ]);
}

/** COMMAND DOCS's map for one command, flattened as RESP2 shows maps. */
function commandDocs(command: CommandSpec): Buffer {
  const fields = [bulkReply('summary'), bulkReply(command.summary), bulkReply('since'), bulkReply(command.since), bulkReply('group'), bulkReply(command.group)];
  if (command.complexity) fields.push(bulkReply('complexity'), bulkReply(command.complexity));
  if (command.subcommands) {
    fields.push(bulkReply('subcommands'), arrayReply([...command.subcommands.values()].flatMap((sub) => [bulkReply(sub.name), commandDocs(sub)])));
  }
  return arrayReply(fields);
}

const SERVER_COMMANDS: readonly CommandSpec[] = [
  spec({
    name: 'info', arity: -1, flags: ['loading', 'stale'], categories: ['@slow', '@dangerous'], group: 'server', since: '1.0.0',
    summary: 'Get information and statistics about the server', access: () => READ_ALL, run: (context, client, args) => infoCommand(context, client, args),
  }),
  spec({
    name: 'command', arity: -1, flags: ['loading', 'stale'], categories: ['@slow', '@connection'], group: 'server', since: '2.8.13',
    summary: 'Get array of Redis command details', subcommands: commandSubcommands(),
    run: (context, client, args) => (args.length === 1 ? arrayReply([...COMMANDS.values()].map(commandInfo)) : withSubcommands(context, client, args, COMMANDS.get('command')!)),
  }),
  spec({
    name: 'config', arity: -2, categories: ['@slow'], group: 'server', since: '2.0.0', summary: 'A container for server configuration commands',
    subcommands: configSubcommands(), run: (context, client, args) => withSubcommands(context, client, args, COMMANDS.get('config')!),
  }),
  spec({
    name: 'client', arity: -2, categories: ['@slow'], group: 'connection', since: '2.4.0', summary: 'A container for client connection commands',
    subcommands: clientSubcommands(), run: (context, client, args) => withSubcommands(context, client, args, COMMANDS.get('client')!),
  }),
  spec({
    name: 'select', arity: 2, flags: ['loading', 'stale', 'fast'], categories: ['@fast', '@connection'], group: 'connection', since: '1.0.0',
    summary: 'Change the selected database for the current connection (dpms has only database 0)',
    run: (_context, _client, args) => {
      const index = parseRedisInteger(args[1]!);
      if (index === undefined) return errorReply(NOT_AN_INTEGER);
      return index === 0n ? OK_REPLY : errorReply('ERR DB index is out of range');
    },
  }),
  spec({
    name: 'hello', arity: -1, flags: ['noscript', 'loading', 'stale', 'fast', 'no_auth'], categories: ['@fast', '@connection'], group: 'connection', since: '6.0.0',
    summary: 'Handshake with Redis (RESP2 only)', run: (_context, client, args) => helloCommand(client, args),
  }),
  spec({
    name: 'auth', arity: -2, flags: ['noscript', 'loading', 'stale', 'fast', 'no_auth'], categories: ['@fast', '@connection'], group: 'connection', since: '1.0.0',
    summary: 'Authenticate to the server (the dpms gateway has no passwords)', run: () => errorReply(NO_AUTH_ERROR),
  }),
  spec({
    name: 'ping', arity: -1, flags: ['fast'], categories: ['@fast', '@connection'], group: 'connection', since: '1.0.0', summary: 'Ping the server',
    run: (_context, _client, args) => {
      if (args.length > 2) return arityError('ping');
      return args.length === 2 ? bulkReply(args[1]!) : simpleStringReply('PONG');
    },
  }),
  spec({
    name: 'echo', arity: 2, flags: ['fast'], categories: ['@fast', '@connection'], group: 'connection', since: '1.0.0', summary: 'Echo the given string',
    run: (_context, _client, args) => bulkReply(args[1]!),
  }),
  // QUIT is answered by the gateway itself (it closes the connection after the reply); the entry is
  // here for arity, COMMAND and COMMAND DOCS.
  spec({
    name: 'quit', arity: -1, flags: ['allow_busy', 'noscript', 'loading', 'stale', 'fast', 'no_auth'], categories: ['@fast', '@connection'], group: 'connection', since: '1.0.0',
    summary: 'Close the connection', run: () => OK_REPLY,
  }),
];

/** Every command the gateway knows, by lower-case name. */
export const COMMANDS: ReadonlyMap<string, CommandSpec> = new Map([...DATA_COMMANDS, ...SERVER_COMMANDS].map((command) => [command.name, command]));

%% erlkube_remsh_epmd: the `-epmd_module` of `erlkube remsh`.
%%
%% OTP's distribution asks its epmd module where a node is before it dials
%% it (inet_tcp_dist and inet_tls_dist: address_please/3, then
%% port_please/2 unless address_please already gave a port). With `--via`,
%% this module answers for exactly one node, the one `erlkube remsh` opens
%% a shell on: its address and port are the local end of a port-forward to
%% the node's fixed distribution port, so the node's host is never resolved
%% and no epmd is asked. Without `--via` (and for every other name) OTP's
%% erl_epmd answers unchanged.
%%
%% The laptop node registers with no epmd either: register_node/2,3 answer
%% {ok, -1}, which makes net_kernel pick a random creation itself.
%%
%% Configuration: `-erlkube_remsh File` names a file that erlkube wrote with
%% mode 0600, holding term_to_binary({Node, {Ip, Port} | none, Cookie}). It is read
%% once, kept in persistent_term and deleted, so the cookie is never on the
%% command line. The cookie is set for Node only (erlang:set_cookie/2)
%% just before the first connection to it.
-module(erlkube_remsh_epmd).

-export([start_link/0, register_node/2, register_node/3,
         listen_port_please/2, port_please/2, port_please/3,
         address_please/3, names/0, names/1]).

%% The handshake version to announce for the forwarded node: the lowest
%% one OTP 23+ speaks, as erl_epmd does when a port is given.
-define(DIST_VERSION, 5).

start_link() ->
    ok = load(),
    erl_epmd:start_link().

register_node(Name, Port) ->
    register_node(Name, Port, inet_tcp).

register_node(_Name, _Port, _Driver) ->
    {ok, -1}.

listen_port_please(Name, Host) ->
    erl_epmd:listen_port_please(Name, Host).

port_please(Name, Host) ->
    port_please(Name, Host, infinity).

port_please(Name, Host, Timeout) ->
    case via(Name, Host) of
        {ok, _Ip, Port} -> {port, Port, ?DIST_VERSION};
        _ -> erl_epmd:port_please(Name, Host, Timeout)
    end.

address_please(Name, Host, Family) ->
    case via(Name, Host) of
        {ok, Ip, Port} -> {ok, Ip, Port, ?DIST_VERSION};
        _ -> erl_epmd:address_please(Name, Host, Family)
    end.

names() ->
    erl_epmd:names().

names(Host) ->
    erl_epmd:names(Host).

%% For the shell's node (its cookie set): {ok, Ip, Port} with --via,
%% epmd without. none for any other node.
via(Name, Host) when is_list(Name), is_list(Host) ->
    Text = Name ++ "@" ++ Host,
    case persistent_term:get(?MODULE, undefined) of
        {Text, Node, Via, Cookie} ->
            true = erlang:set_cookie(Node, Cookie),
            case Via of
                {Ip, Port} -> {ok, Ip, Port};
                none -> epmd
            end;
        _ ->
            none
    end;
via(Name, Host) when is_atom(Name) ->
    via(atom_to_list(Name), Host);
via(_Name, _Host) ->
    none.

load() ->
    case persistent_term:get(?MODULE, undefined) of
        undefined ->
            {ok, [[File]]} = init:get_argument(erlkube_remsh),
            {ok, Bin} = prim_file:read_file(File),
            _ = prim_file:delete(File),
            {Node, Via, Cookie} = binary_to_term(Bin),
            persistent_term:put(?MODULE, {atom_to_list(Node), Node, Via,
                                          binary_to_atom(Cookie, utf8)}),
            ok;
        _ ->
            ok
    end.

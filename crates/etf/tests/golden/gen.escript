#!/usr/bin/env escript
%% Regenerates vectors.tsv next to this script with the real BEAM:
%%
%%   escript crates/etf/tests/golden/gen.escript
%%
%% Each line: Name, Text, Input, Plain, Utf8, Compressed, Flags (tab
%% separated; hex columns are lower-case hex of whole binaries).
%%   Text       the term in erlkube-etf's Erlang syntax (the shell's ~p plus
%%              the #Pid/#Port/#Ref forms that keep the node), "-" for funs
%%   Input      bytes to decode (crafted for the old/alternative tags, else
%%              term_to_binary(T))
%%   Plain      term_to_binary(T)                       (OTP 25: minor_version 1)
%%   Utf8       term_to_binary(T, [{minor_version, 2}])
%%   Compressed term_to_binary(T, [compressed])
%%   Flags      canon | nocanon (encoding need not be byte-equal) | fun
-mode(compile).

main(_) ->
    Dir = filename:dirname(escript:script_name()),
    Out = filename:join(Dir, "vectors.tsv"),
    Lines = [line(V) || V <- vectors()],
    ok = file:write_file(Out, unicode:characters_to_binary(Lines)),
    io:format("wrote ~b vectors to ~s~n", [length(Lines), Out]).

hex(B) -> [io_lib:format("~2.16.0b", [X]) || <<X>> <= B].

line({Name, T, Input, Flags}) ->
    Text = case Flags of fun_ -> "-"; _ -> fmt(T) end,
    F = case Flags of fun_ -> "fun"; _ -> atom_to_list(Flags) end,
    [Name, $\t, Text, $\t, hex(Input), $\t, hex(term_to_binary(T)), $\t,
     hex(term_to_binary(T, [{minor_version, 2}])), $\t,
     hex(term_to_binary(T, [compressed])), $\t, F, $\n].

%% Text in erlkube-etf syntax.
fmt(T) when is_pid(T) ->
    <<131, 88, R/binary>> = term_to_binary(T, [{minor_version, 2}]),
    {Id, Ser, Cr} = node_rest(R),
    io_lib:format("#Pid<~ts.~b.~b.~b>", [fmt_atom(node(T)), Id, Ser, Cr]);
fmt(T) when is_port(T) ->
    {Id, Cr} = case term_to_binary(T, [{minor_version, 2}]) of
                   <<131, 89, R/binary>> -> <<I:32, C:32>> = skip_node(R), {I, C};
                   <<131, 120, R/binary>> -> <<I:64, C:32>> = skip_node(R), {I, C}
               end,
    io_lib:format("#Port<~ts.~b.~b>", [fmt_atom(node(T)), Id, Cr]);
fmt(T) when is_reference(T) ->
    <<131, 90, N:16, R/binary>> = term_to_binary(T, [{minor_version, 2}]),
    <<Cr:32, Ws:(N*4)/binary>> = skip_node(R),
    io_lib:format("#Ref<~ts.~b~s>", [fmt_atom(node(T)), Cr, [[$., integer_to_list(W)] || <<W:32>> <= Ws]]);
fmt(T) when is_atom(T) -> fmt_atom(T);
fmt(T) when is_tuple(T) -> [${, join([fmt(E) || E <- tuple_to_list(T)]), $}];
fmt(T) when is_map(T) ->
    Es = lists:sort(fun({A, _}, {B, _}) -> erts_internal:cmp_term(A, B) =< 0 end, maps:to_list(T)),
    ["#{", join([[fmt(K), " => ", fmt(V)] || {K, V} <- Es]), $}];
fmt([]) -> "[]";
fmt(T) when is_list(T) ->
    case io_lib:printable_latin1_list(T) of
        true -> one_line(T);
        false -> [$[, fmt_list(T), $]]
    end;
fmt(T) when is_function(T) ->
    case erlang:fun_info(T, type) of
        {type, external} ->
            {module, M} = erlang:fun_info(T, module),
            {name, F} = erlang:fun_info(T, name),
            {arity, A} = erlang:fun_info(T, arity),
            ["fun ", fmt_atom(M), $:, fmt_atom(F), $/, integer_to_list(A)];
        {type, local} -> "-"
    end;
fmt(T) -> one_line(T).

one_line(T) -> io_lib:print(T, 1, 100000000, -1).

fmt_list([H]) -> fmt(H);
fmt_list([H | T]) when is_list(T) -> [fmt(H), $, | fmt_list(T)];
fmt_list([H | T]) -> [fmt(H), $|, fmt(T)].

fmt_atom(A) -> io_lib:format("~tw", [A]).

join([]) -> [];
join([X]) -> X;
join([X | Xs]) -> [X, $, | join(Xs)].

skip_node(<<119, L, _:L/binary, R/binary>>) -> R.
node_rest(R) -> <<I:32, S:32, C:32>> = skip_node(R), {I, S, C}.

atom_bytes(Name) -> B = list_to_binary(Name), <<100, (byte_size(B)):16, B/binary>>.

v(Name, T) -> {Name, T, term_to_binary(T), canon}.
crafted(Name, Bin) -> {Name, binary_to_term(Bin), Bin, canon}.

vectors() ->
    Node = atom_bytes("a@host.example"),
    BigMap = maps:from_list([{K, K * K} || K <- lists:seq(1, 40)]),
    Y = 42,
    Fun1 = fun(X) -> X + Y end,
    Fun0 = fun() -> ok end,
    [v("small_int_0", 0), v("small_int_255", 255),
     v("integer_256", 256), v("integer_neg1", -1),
     v("integer_max", 2147483647), v("integer_min", -2147483648),
     v("small_big_2_31", 2147483648), v("small_big_neg", -2147483649),
     v("small_big_i64_max", 9223372036854775807), v("small_big_i64_min", -9223372036854775808),
     v("small_big_u64", 18446744073709551615), v("small_big_2_64", 18446744073709551616),
     v("small_big_neg_2_100", -(1 bsl 100)),
     v("large_big", 1 bsl 2100), v("large_big_neg", -(1 bsl 2100) + 7),
     v("float_pi", 3.14), v("float_neg", -2.5), v("float_zero", 0.0), v("float_neg_zero", -0.0),
     v("float_1e10", 1.0e10), v("float_big", 1.7976931348623157e308),
     v("float_tiny", 5.0e-324), v("float_small", 1.0e-5), v("float_third", 1/3),
     v("float_2_53", 9007199254740993.0), v("float_123", 123456789012345.0),
     v("atom_ok", ok), v("atom_empty", ''), v("atom_quoted", 'hello world'),
     v("atom_upper", 'Upper'), v("atom_node", 'a@b.c'), v("atom_latin1", list_to_atom([233, 116, 233])),
     v("atom_unicode", list_to_atom([23383, 97])),
     v("atom_255", list_to_atom(lists:duplicate(255, $a))),
     v("atom_255_utf8", list_to_atom(lists:duplicate(255, 23383))),
     v("atom_escape", list_to_atom("a'b\\c\n")), v("atom_reserved", 'receive'),
     v("true", true), v("false", false),
     v("nil", []), v("string", "abc"), v("string_escapes", "a\tb\"c\n"),
     v("bytes_list", [1, 2, 3]), v("string_65535", lists:duplicate(65535, $x)),
     v("list_65536_bytes", lists:duplicate(65536, 7)),
     v("list_mixed", [1, 2.5, <<"bin">>, a]), v("list_big_ints", [256, 1000]),
     v("improper", [1, 2 | a]), v("improper_nested", [[a] | b]), v("list_of_lists", [[1], [2, 3], []]),
     v("binary_empty", <<>>), v("binary_text", <<"hello">>), v("binary_bytes", <<0, 1, 255>>),
     v("binary_latin1", <<233, 97>>),
     v("bit_binary", <<1, 2, 3:4>>), v("bit_binary_1", <<1:1>>), v("bit_binary_7", <<255, 127:7>>),
     v("tuple_empty", {}), v("tuple", {ok, 1}), v("tuple_nested", {a, {b, {c, []}}}),
     v("large_tuple", list_to_tuple(lists:seq(1, 300))),
     v("map_empty", #{}), v("map_atoms", #{b => 2, a => 1, c => 3}),
     v("map_mixed_keys", #{1 => a, 1.0 => b, "s" => c, <<"b">> => d, {t} => e, [] => f, z => g}),
     v("map_nested", #{a => #{b => [1, 2]}}),
     v("map_32", maps:from_list([{K, K} || K <- lists:seq(1, 32)])),
     {"map_40", BigMap, term_to_binary(BigMap), nocanon},
     v("export", fun lists:map/2), v("export_quoted", fun 'a b':'C'/0),
     v("pid_local", self()), v("port_local", hd(erlang:ports())), v("ref_local", make_ref()),
     v("example", {ok, [1, 2.5, <<"bin">>, #{a => 'B'}]}),
     v("example_small", {ok, [1, 2, 3], <<"hello">>, #{a => 1}, atom, 3.14}),
     crafted("new_pid_remote", <<131, 88, Node/binary, 0, 0, 0, 85, 0, 0, 0, 3, 0, 0, 48, 57>>),
     crafted("pid_ext_old", <<131, 103, Node/binary, 0, 0, 0, 85, 0, 0, 0, 3, 2>>),
     crafted("new_port_remote", <<131, 89, Node/binary, 0, 0, 0, 7, 0, 0, 48, 57>>),
     crafted("v4_port", <<131, 120, Node/binary, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 48, 57>>),
     crafted("port_ext_old", <<131, 102, Node/binary, 0, 0, 0, 7, 1>>),
     crafted("newer_reference", <<131, 90, 0, 3, Node/binary, 0, 0, 48, 57, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3>>),
     crafted("newer_reference_5", <<131, 90, 0, 5, Node/binary, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5>>),
     crafted("new_reference_old", <<131, 114, 0, 3, Node/binary, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3>>),
     crafted("reference_ext_old", <<131, 101, Node/binary, 0, 0, 0, 1, 2>>),
     crafted("float_ext_old", list_to_binary([131, 99, io_lib:format("~-31.20.\000e", [2.5])])),
     crafted("atom_ext_latin1", <<131, 100, 0, 3, 233, 116, 233>>),
     crafted("small_atom_ext", <<131, 115, 2, $o, $k>>),
     crafted("atom_utf8_long_form", <<131, 118, 0, 2, $o, $k>>),
     crafted("integer_ext_small_value", <<131, 98, 0, 0, 0, 5>>),
     crafted("small_big_small_value", <<131, 110, 1, 0, 5>>),
     crafted("large_tuple_small", <<131, 105, 0, 0, 0, 1, 97, 1>>),
     crafted("list_ext_of_bytes", <<131, 108, 0, 0, 0, 2, 97, 1, 97, 2, 106>>),
     crafted("list_tail_string", <<131, 108, 0, 0, 0, 1, 97, 1, 107, 0, 2, 2, 3>>),
     crafted("list_tail_list", <<131, 108, 0, 0, 0, 1, 97, 1, 108, 0, 0, 0, 1, 100, 0, 1, $a, 106>>),
     crafted("bit_binary_8", <<131, 77, 0, 0, 0, 2, 8, 1, 2>>),
     crafted("compressed_string", term_to_binary(lists:duplicate(300, $a), [compressed])),
     crafted("compressed_tuple", term_to_binary({lists:seq(1, 100), <<0:4000>>}, [{compressed, 9}])),
     {"fun_closure", Fun1, term_to_binary(Fun1), fun_},
     {"fun_no_env", Fun0, term_to_binary(Fun0), fun_}].

# The default Phoenix.PubSub adapter's message flow, written from
# phoenix_pubsub 2.x's lib/phoenix/pubsub/pg2.ex and supervisor.ex (the
# package itself cannot be fetched in CI). Used by the node's and the
# CLI's PubSub tests.
defmodule PgPubSub do
  def start(name) do
    case :pg.start(Phoenix.PubSub) do
      {:ok, _} -> :ok
      {:error, {:already_started, _}} -> :ok
    end
    {:ok, reg} = Registry.start_link(keys: :duplicate, name: name)
    Process.unlink(reg)
    adapter = Module.concat(name, "Adapter")
    {:ok, _} = GenServer.start(PgPubSub.Worker, {name, adapter}, name: adapter)
    :ok
  end

  def broadcast(name, topic, message) do
    adapter = Module.concat(name, "Adapter")
    msg = {:forward_to_local, topic, message, Phoenix.PubSub}
    for pid <- :pg.get_members(Phoenix.PubSub, adapter), node(pid) != node(), do: send(pid, msg)
    local_dispatch(name, topic, message)
  end

  def local_dispatch(name, topic, message) do
    for {pid, _} <- Registry.lookup(name, topic), do: send(pid, message)
    :ok
  end

  def members(name), do: :pg.get_members(Phoenix.PubSub, Module.concat(name, "Adapter"))
end

defmodule PgPubSub.Worker do
  use GenServer
  def init({name, adapter}) do
    :ok = :pg.join(Phoenix.PubSub, adapter, self())
    {:ok, name}
  end
  def handle_info({:forward_to_local, topic, message, _dispatcher}, name) do
    PgPubSub.local_dispatch(name, topic, message)
    {:noreply, name}
  end
  def handle_info(_, name), do: {:noreply, name}
end

defmodule PgPubSub.Collector do
  def start(name, topic) do
    parent = self()
    pid = spawn(fn ->
      {:ok, _} = Registry.register(name, topic, nil)
      send(parent, {:subscribed, self()})
      loop([])
    end)
    receive do
      {:subscribed, ^pid} -> pid
    end
  end

  def got(pid) do
    send(pid, {:"$get", self()})
    receive do
      {:"$got", l} -> l
    after
      5000 -> :timeout
    end
  end

  defp loop(acc) do
    receive do
      {:"$get", from} ->
        send(from, {:"$got", Enum.reverse(acc)})
        loop(acc)
      m ->
        loop([m | acc])
    end
  end
end
:ok
